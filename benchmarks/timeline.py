#!/usr/bin/env python3
"""The last pass of an nsys profile of `sparge bench --backend cuda` as one timeline.

Usage: timeline.py GPU_TRACE.csv API_TRACE.csv   (`nsys stats --report cuda_gpu_trace|cuda_api_trace --format csv`)

The last pass starts where the one before it ended: after the first device-to-host copy call that follows the
penultimate attention kernel (the pass's "counters down"). Prints every driver call and every device operation
from there, in time order (µs from the pass's start), then the device's busy time, its idle gaps longer than
5 µs and what the host was doing in each, and the pass's wall time.
"""
import csv
import sys


def rows(path):
    with open(path, newline="") as f:
        text = f.read()
    lines = text.splitlines()
    # nsys may print notes before the header: start at the line that names the start column.
    for i, line in enumerate(lines):
        if line.startswith('"Start') or line.startswith("Start"):
            return list(csv.DictReader(lines[i:]))
    return []


def column(row, *names):
    for n in names:
        if n in row and row[n] != "":
            return row[n]
    raise KeyError(names)


def main():
    gpu = [(int(column(r, "Start (ns)")), int(column(r, "Duration (ns)")), column(r, "Name"),
            column(r, "CorrId", "CorrID")) for r in rows(sys.argv[1])]
    api = [(int(column(r, "Start (ns)")), int(column(r, "Duration (ns)")), column(r, "Name"),
            column(r, "CorrID", "CorrId")) for r in rows(sys.argv[2])]
    gpu.sort()
    api.sort()
    attention = [g for g in gpu if "attention" in g[2]]
    if len(attention) < 2:
        print("fewer than two attention kernels in the profile")
        return
    penultimate_end = attention[-2][0] + attention[-2][1]
    start = next((a[0] + a[1] for a in api if a[0] > penultimate_end and "DtoH" in a[2]), penultimate_end)
    window_api = [a for a in api if a[0] >= start]
    window_gpu = [g for g in gpu if g[0] >= start]
    end = max([a[0] + a[1] for a in window_api] + [g[0] + g[1] for g in window_gpu])
    events = [(a[0], "host", a[1], a[2]) for a in window_api] + [(g[0], "device", g[1], g[2]) for g in window_gpu]
    events.sort()
    print(f"{'at µs':>9} {'µs':>8}  side    what")
    for t, side, d, name in events:
        print(f"{(t - start) / 1e3:9.1f} {d / 1e3:8.1f}  {side:6}  {name[:110]}")
    # The device's busy time as a union of intervals, and its idle gaps.
    busy, gaps, cursor = 0, [], start
    for g in window_gpu:
        s, e = g[0], g[0] + g[1]
        if s > cursor:
            gaps.append((cursor, s))
        if e > cursor:
            busy += e - max(s, cursor)
            cursor = e
    print(f"\npass: {(end - start) / 1e3:.1f} µs wall, device busy {busy / 1e3:.1f} µs, "
          f"idle {(end - start - busy) / 1e3:.1f} µs")
    print("device idle gaps over 5 µs, and the driver calls the host made meanwhile:")
    for s, e in gaps:
        if e - s <= 5000:
            continue
        calls = [a[2] for a in window_api if s <= a[0] < e]
        summary = {}
        for c in calls:
            summary[c] = summary.get(c, 0) + 1
        said = ", ".join(f"{n}×{k}" for n, k in summary.items())
        print(f"  {(s - start) / 1e3:9.1f} … {(e - start) / 1e3:9.1f}: {(e - s) / 1e3:7.1f} µs  {said[:160]}")


if __name__ == "__main__":
    main()
