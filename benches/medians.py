#!/usr/bin/env python3
"""medians.py RUNS_FILE GROUP_KEY: the median of every numeric field per group.

RUNS_FILE has one run per line as `key=value` pairs (what benches/ab.sh and
benches/group_commit.sh print); runs are grouped by the value of GROUP_KEY.
"""
import statistics
import sys


def main():
    path, group_key = sys.argv[1], sys.argv[2]
    groups = {}
    for line in open(path):
        fields = dict(kv.split("=", 1) for kv in line.split())
        groups.setdefault(fields[group_key], []).append(fields)
    for group, runs in groups.items():
        parts = []
        for key in runs[0]:
            if key in (group_key, "run"):
                continue
            try:
                values = [float(r[key]) for r in runs]
            except (KeyError, ValueError):
                continue
            parts.append(f"{key}={statistics.median(values):g}")
        print(f"{group_key}={group} median of {len(runs)}: " + " ".join(parts))


if __name__ == "__main__":
    main()
