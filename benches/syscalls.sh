#!/usr/bin/env bash
# Counts, per operation, the UDP datagrams sent on the machine and the system calls of
# the nodes and of the load generator while a 3-node `shoal dev` cluster serves a
# workload: where a change to the transport or the driver saved (or added) work.
#
#   benches/syscalls.sh BIN_DIR [OUT_DIR]
#
# BIN_DIR holds release builds of `shoal` and `shoal-bench`. Environment: WORKLOAD (c),
# CONCURRENCY (64), WINDOW (seconds counted, 5). Needs `perf` (linux-perf) and root or
# perf_event_paranoid <= 1 for the syscall tracepoints. Expects an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$1
OUT="${2:-bench-results/syscalls}"
WORKLOAD="${WORKLOAD:-c}"
CONCURRENCY="${CONCURRENCY:-64}"
WINDOW="${WINDOW:-5}"
mkdir -p "$OUT"
# shellcheck source=benches/dev_cluster.sh
. benches/dev_cluster.sh
trap dev_cluster_down EXIT
dir="$(mktemp -d)/cluster"
dev_cluster_up "$dir" 27701 29701 "$OUT/cluster.log"
"$BIN/shoal-bench" --keys 100000 --value-size 1024 --no-progress --workload c --load \
    --concurrency 64 --ops 1000 >/dev/null
nodes=$(pgrep -f "$dir/n[0-9]*/node.toml" | paste -sd,)
"$BIN/shoal-bench" --keys 100000 --value-size 1024 --no-progress --workload "$WORKLOAD" \
    --concurrency "$CONCURRENCY" --duration $((WINDOW + 12))s --warmup 2s \
    --json "$OUT/run.json" >"$OUT/run.txt" &
bench=$!
sleep 5
udp() { grep '^Udp:' /proc/net/snmp | tail -n 1; }
udp >"$OUT/udp.before"
perf stat -x, -o "$OUT/nodes.stat" -p "$nodes" -e 'syscalls:sys_enter_sendmsg,syscalls:sys_enter_recvmmsg,syscalls:sys_enter_write,syscalls:sys_enter_futex,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_sched_yield' -- sleep "$WINDOW" &
perf stat -x, -o "$OUT/bench.stat" -p "$bench" -e 'syscalls:sys_enter_sendmsg,syscalls:sys_enter_recvmmsg,syscalls:sys_enter_futex,syscalls:sys_enter_epoll_wait' -- sleep "$WINDOW"
udp >"$OUT/udp.after"
wait "$bench"
dev_cluster_down
python3 - "$OUT" "$WINDOW" <<'PY' | tee "$OUT/summary.txt"
import json, sys
out, window = sys.argv[1], float(sys.argv[2])
run = json.load(open(f"{out}/run.json"))
ops = run["throughput"] * window
print(f"ops/s {run['throughput']:.0f} (the counts below are per operation, over {window:.0f} s)")
before = open(f"{out}/udp.before").read().split()
after = open(f"{out}/udp.after").read().split()
print(f"udp datagrams sent {(int(after[4]) - int(before[4])) / ops:.2f}")
for who in ("nodes", "bench"):
    for line in open(f"{out}/{who}.stat"):
        fields = line.strip().split(",")
        if len(fields) > 2 and fields[0].isdigit():
            print(f"{who} {fields[2].split(':')[-1].replace('sys_enter_', '')} {int(fields[0]) / ops:.2f}")
PY
