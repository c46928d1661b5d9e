#!/usr/bin/env python3
"""Share of CPU samples under a frame, and how it splits among what that frame calls.

    perf script -F comm,tid,ip,sym -i perf.data > stacks.txt
    python3 bench/perf_children.py stacks.txt FRAME [FRAME...]

FRAME is a substring of a symbol (e.g. `Replica::apply`, `do_fsync`). For each, prints
the percentage of all samples whose stack holds it, then its direct callees by share.
"""
import collections
import sys


def stacks(path):
    stack = []
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        if not line.strip():
            if stack:
                yield stack
            stack = []
        elif line[0] in " \t":
            parts = line.strip().split(" ", 1)
            stack.append(parts[1] if len(parts) > 1 else parts[0])
        else:
            if stack:
                yield stack
            stack = []
    if stack:
        yield stack


def main():
    path, frames = sys.argv[1], sys.argv[2:]
    samples = list(stacks(path))
    total = max(len(samples), 1)
    for frame in frames:
        hits, callees = 0, collections.Counter()
        for stack in samples:  # leaf first
            for i, symbol in enumerate(stack):
                if frame in symbol:
                    hits += 1
                    callees[stack[i - 1] if i > 0 else "(self)"] += 1
                    break
        print(f"{frame}: {100 * hits / total:.1f}% of {total} samples")
        for callee, count in callees.most_common(6):
            print(f"  {100 * count / total:5.1f}%  {callee[:120]}")


main()
