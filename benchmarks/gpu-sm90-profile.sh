#!/bin/bash
# Where the Hopper kernel's time goes, from Nsight Compute on the device machine: one dense launch (N = 32768,
# 8 heads, D = 128; the harness's `speed` mode, its second launch) of each harness binary named, full section
# set, clocks left alone; the details page and the per-instruction SASS page (warp stall samples) as text.
# Usage, from a folder of harness binaries built by `bash benchmarks/gpu-sm90.sh build DIR`:
#   bash benchmarks/gpu-sm90-profile.sh DIR NAME...        (reports and text to $OUT, default ./gpu-sm90-profile)
set -u
dir=$1; shift
out="${OUT:-$PWD/gpu-sm90-profile}"; mkdir -p "$out"
export PATH="$PATH:/usr/local/cuda/bin:/opt/nvidia/nsight-compute/2025.3.1"
command -v ncu > /dev/null || { echo "no ncu"; exit 1; }
status=0
for name in "$@"; do
    echo "== $name ($(date -u +%H:%M:%S))"
    timeout -k 5 240 ncu --clock-control none --kernel-name sparge_attention_sm90 --launch-skip 1 --launch-count 1 \
        --set full -f -o "$out/$name" "$dir/$name" speed > "$out/$name.run.txt" 2>&1
    rc=$?; echo "ncu rc=$rc"; tail -3 "$out/$name.run.txt"
    [ $rc -eq 0 ] || { status=1; continue; }
    ncu --import "$out/$name.ncu-rep" --page details > "$out/$name.details.txt" 2>&1
    ncu --import "$out/$name.ncu-rep" --page source --csv --print-source sass > "$out/$name.sass.csv" 2>&1
    grep -E "Duration|SM Frequency|Compute \(SM\) Throughput|Memory Throughput|L2 Cache Throughput|Issue Slots Busy|Issued Ipc|No Eligible|Eligible Warps|Warp Cycles Per Issued|Tensor|Stall" "$out/$name.details.txt" | head -40
    ls -la "$out/$name".* | awk '{print $5, $9}'
done
exit $status
