#!/usr/bin/env bash
# Installs what is missing (launch/setup.sh --no-build), then runs every test (debug build, compiled for
# SPARGE_TARGET_CPU like the release binary) and prints a summary. Exits non-zero if any test fails.
#
# The distributed tests launch `mpirun -np 2…4` on the debug `sparge` that `swift test` builds; the
# release binary is not needed here, so it is not built (that would double the time on small CI machines).
# Extra arguments go to `swift test` (e.g. `--filter CommunicatorTests`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash launch/setup.sh --no-build
source launch/env.sh

log=.build/test.log
mkdir -p .build
echo "test: swift test -Xswiftc -target-cpu -Xswiftc $SPARGE_TARGET_CPU $* (log: $log)"
start=$SECONDS
status=0
swift test -Xswiftc -target-cpu -Xswiftc "$SPARGE_TARGET_CPU" "$@" 2>&1 | tee "$log" || status=$?
elapsed=$((SECONDS - start))

# The Python package over the C interface (python/tests; skips where python3/pytest are absent); not when
# arguments narrow the Swift tests down.
python_log=.build/python-test.log
python_status=0
if [ "$#" -eq 0 ]; then
    bash launch/python-test.sh 2>&1 | tee "$python_log" || python_status=$?
else
    echo "python-test: skipped: arguments given to swift test" > "$python_log"
fi
python_summary="$(grep -E '^(python-test: skipped|[0-9]+ (passed|failed)|=+ .*(passed|failed|error))' "$python_log" | tail -n 1 | sed -E 's/=//g; s/^ +//; s/ +$//')"

# XCTest prints one "Executed N tests, with M failures" line per suite; the last one is the total.
summary="$(grep -E 'Executed [0-9]+ tests?, with .*failures?' "$log" | tail -n 1 | sed -E 's/^[[:space:]]*//')"
failed="$(grep -E "^Test Case '.*' failed" "$log" | sed -E "s/^Test Case '([^']*)'.*/\1/" || true)"
skipped="$(grep -cE "^Test Case '.*' skipped" "$log" || true)"
# swift-testing (@Test) reports separately, in one line of its own.
testing="$(grep -E 'Test run with [0-9]+ tests?' "$log" | tail -n 1 | sed -E 's/^[^T]*//' || true)"

echo
echo "==================== test summary ===================="
echo "XCTest:         ${summary:-no summary found (build failure?)}"
echo "swift-testing:  ${testing:-no summary found}"
echo "python:         ${python_summary:-no summary found} (log: $python_log)"
echo "skipped: $skipped   time: ${elapsed}s   log: $log"
if [ -n "$failed" ]; then
    echo "failed tests:"
    echo "$failed" | sed 's/^/  /'
fi
if [ "$status" -ne 0 ] || [ -n "$failed" ] || [ "$python_status" -ne 0 ]; then
    echo "RESULT: FAILED (swift test exit status $status, python tests $python_status)"
    exit 1
fi
echo "RESULT: PASSED"
