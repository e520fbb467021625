#!/usr/bin/env bash
# Measures the baseline in BENCHMARKS.md: a 3-node `shoal dev` cluster (N=3, R=2, W=2),
# 1 KiB values, 100,000 keys, YCSB workloads A and C at concurrency 1 and 64; and, in the
# same run, the machine's raw limits (QUIC request/response loop and RocksDB with the
# node's settings), plus a CPU profile of one node under workload A.
#
#   benches/baseline.sh [OUT_DIR]        (default: ./bench-results)
#
# Uses release builds; expects an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shoal-target}"
OUT="${1:-bench-results}"
DURATION="${DURATION:-30s}"
mkdir -p "$OUT"
cargo build --release -q -p shoal-node -p shoal-bench
BIN="$CARGO_TARGET_DIR/release"
CLUSTER="$(mktemp -d)/cluster"

echo "== machine" | tee "$OUT/machine.txt"
{ date -u; nproc; free -g | head -2; uname -r; } | tee -a "$OUT/machine.txt"

echo "== raw limits"
for c in 1 64; do
    "$BIN/raw-quinn" --request-bytes 1100 --response-bytes 1100 --concurrency "$c" --duration 10s --json \
        | tee "$OUT/raw-quinn-c$c.json"
done
for t in 1 2; do
    "$BIN/raw-rocksdb" --keys 100000 --value-bytes 1100 --threads "$t" --duration 10s --json \
        | tee "$OUT/raw-rocksdb-t$t.json"
done

echo "== cluster"
"$BIN/shoal" dev init --dir "$CLUSTER" --nodes 3 --base-port 27101 --metrics-base-port 29201 >/dev/null
"$BIN/shoal" dev up --dir "$CLUSTER" >"$OUT/cluster.log" 2>&1 &
UP=$!
trap 'kill -INT $UP 2>/dev/null; wait $UP 2>/dev/null || true' EXIT
export SHOAL_CONFIG="$CLUSTER/client.toml"
for _ in $(seq 1 50); do
    "$BIN/shoal" status >/dev/null 2>&1 && break
    sleep 0.2
done
BENCH=("$BIN/shoal-bench" --keys 100000 --value-size 1024 --no-progress)
# Insert the 100,000 keys once (not measured), then measure.
"${BENCH[@]}" --workload c --load --concurrency 64 --ops 1000 --json "$OUT/load.json" >"$OUT/load.txt"
for w in a c; do
    for c in 1 64; do
        "${BENCH[@]}" --workload "$w" --concurrency "$c" --duration "$DURATION" --warmup 5s \
            --json "$OUT/ycsb-$w-c$c.json" | tee "$OUT/ycsb-$w-c$c.txt"
    done
done

echo "== profile (workload A, concurrency 64, node n1)"
PID=$(pgrep -f "$CLUSTER/n1/node.toml" | head -1)
"${BENCH[@]}" --workload a --concurrency 64 --duration 20s >/dev/null &
B=$!
sleep 5
perf record -F 499 -g -p "$PID" -o "$OUT/perf.data" -- sleep 10 >/dev/null 2>&1 || true
wait $B
perf report -i "$OUT/perf.data" --stdio --no-children --sort dso,sym --percent-limit 1.5 2>/dev/null \
    | grep -v '^$' | head -80 >"$OUT/perf-top.txt" || true
perf report -i "$OUT/perf.data" --stdio --no-children --sort dso --percent-limit 0.5 2>/dev/null \
    | grep -v '^$' | head -40 >"$OUT/perf-dso.txt" || true
echo "results in $OUT"
