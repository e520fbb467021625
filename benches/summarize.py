#!/usr/bin/env python3
"""Summarises a `benches/baseline.sh` run directory as a Markdown table.

For each Shoal run (ycsb-<workload>-c<concurrency>.json with its .cpu file): throughput,
p50/p99 per operation, the ratio to the reference measured in the same run (Redis SET for
workload A and write-only, GET for workload C, at the same concurrency), and the CPU
microseconds per operation of the three nodes and of the load generator (CPU seconds over
the whole run, warm-up included, divided by every operation it made, warm-up included).

    python3 benches/summarize.py OUT_DIR
"""

import csv
import json
import re
import sys
from pathlib import Path

REFERENCE_TEST = {"a": "SET", "write": "SET", "c": "GET"}


def seconds(field: str) -> float:
    """`times` prints `1m2.345s`."""
    m = re.fullmatch(r"(\d+)m([\d.]+)s", field)
    if not m:
        raise ValueError(f"not a `times` duration: {field!r}")
    return int(m.group(1)) * 60 + float(m.group(2))


def redis(out: Path) -> dict:
    """(test, concurrency) -> (requests per second, p50 ms)."""
    ref = {}
    for path in out.glob("redis-c*.csv"):
        c = int(path.stem.split("-c")[1])
        with path.open() as f:
            for row in csv.DictReader(f):
                p50 = row.get("p50_latency_ms")
                ref[(row["test"], c)] = (float(row["rps"]), float(p50) if p50 else None)
    return ref


def main() -> int:
    out = Path(sys.argv[1])
    ref = redis(out)
    rows = []
    for path in sorted(out.glob("ycsb-*-c*.json")):
        name = path.stem
        workload, conc = name[len("ycsb-"):].rsplit("-c", 1)
        c = int(conc)
        s = json.loads(path.read_text())
        ops = s["ops_total"] + s.get("warmup_ops", 0)
        cpu_path = path.with_suffix(".cpu")
        node_us = bench_us = None
        if cpu_path.exists() and ops:
            f = cpu_path.read_text().split()
            node_cpu = float(f[1]) - float(f[0])
            bench_cpu = (seconds(f[4]) + seconds(f[5])) - (seconds(f[2]) + seconds(f[3]))
            node_us = node_cpu / ops * 1e6
            bench_us = bench_cpu / ops * 1e6
        test = REFERENCE_TEST.get(workload)
        reference = ref.get((test, c))
        ratio = s["throughput"] / reference[0] if reference else None
        latency = ", ".join(
            f"{op} {o['p50_us'] / 1000:.2f} / {o['p99_us'] / 1000:.2f}"
            for op, o in sorted(s["ops"].items())
        )
        rows.append(
            (
                workload.upper() if workload != "write" else "write-only",
                c,
                s["throughput"],
                latency,
                f"{test} {reference[0]:,.0f}" if reference else "—",
                f"{ratio:.3f}" if ratio is not None else "—",
                f"{node_us:.0f}" if node_us is not None else "—",
                f"{bench_us:.0f}" if bench_us is not None else "—",
                s["errors_total"],
            )
        )
    print(
        "| workload | concurrency | ops/s | p50 / p99 ms | reference ops/s | ratio | "
        "nodes' CPU µs/op | load generator CPU µs/op | errors |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:,.0f} | {r[3]} | {r[4]} | {r[5]} | {r[6]} | {r[7]} | {r[8]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
