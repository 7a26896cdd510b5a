"""Warp-stall samples of an Nsight Compute report, summed: by reason, and the instructions with most samples.

Usage: python3 benchmarks/ncu-stalls.py [--in-order PERCENT] NAME.sass.csv...
NAME.sass.csv is the `--page source --csv --print-source sass` export that benchmarks/gpu-sm90-profile.sh writes.
With --in-order, every instruction with at least PERCENT of the samples is printed in program order instead,
with its index, the running share, how often it executed and its two main stall reasons (how
benchmarks/gpu-2026-11-30-softmax/ncu-int8-hot-instructions.txt was made, with 0.15).
"""
import collections
import csv
import sys

SAMPLES = 'Warp Stall Sampling (All Samples)'


def read(name):
    """The header's stall columns and, per instruction, (index, samples, source, executed, {reason: samples})."""
    rows = list(csv.reader(open(name)))
    header, data = rows[1], rows[2:]
    column = {h: i for i, h in enumerate(header)}
    reasons = [h for h in header if h.startswith('stall_') and 'Not Issued' not in h]
    instructions = []
    for index, row in enumerate(data):
        if len(row) < len(header) - 5 or not row[column[SAMPLES]].isdigit():
            continue
        stalls = {h: int(row[column[h]]) for h in reasons if row[column[h]].isdigit() and int(row[column[h]]) > 0}
        instructions.append((index, int(row[column[SAMPLES]]), row[column['Source']].strip(),
                             row[column['Instructions Executed']], stalls))
    return reasons, instructions


def summary(name):
    _, instructions = read(name)
    total = sum(s for _, s, _, _, _ in instructions)
    print('==', name, 'samples', total)
    if total == 0:
        return
    by_reason = collections.Counter()
    for _, _, _, _, stalls in instructions:
        by_reason.update(stalls)
    for reason, count in by_reason.most_common(12):
        print(f'  {reason:24s} {count:8d} {100 * count / total:5.1f}%')
    for _, samples, source, _, stalls in sorted(instructions, key=lambda x: -x[1])[:25]:
        top = sorted(stalls.items(), key=lambda x: -x[1])[:3]
        print(f'  {100 * samples / total:5.2f}% {source[:60]:60s} {top}')


def in_order(name, least):
    _, instructions = read(name)
    total = sum(s for _, s, _, _, _ in instructions)
    if total == 0:
        return
    running = 0
    for index, samples, source, executed, stalls in instructions:
        running += samples
        share = 100 * samples / total
        if share >= least:
            top = sorted(((r[6:], n) for r, n in stalls.items()), key=lambda x: -x[1])[:2]
            print(f'{index:5d} {share:5.2f} cum{100 * running / total:5.1f} ex{executed:>10s} {source[:58]:58s} {top}')


if __name__ == '__main__':
    args = sys.argv[1:]
    if args[:1] == ['--in-order']:
        for name in args[2:]:
            in_order(name, float(args[1]))
    else:
        for name in args:
            summary(name)
