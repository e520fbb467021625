#!/usr/bin/env bash
# Measures the baseline in BENCHMARKS.md: a 3-node `shoal dev` cluster (N=3, R=2, W=2),
# 1 KiB values, 100,000 keys, YCSB workloads A and C at concurrency 1, 32 and 64 and a
# write-only run at 64; and, in the same run, a reference (Redis with redis-benchmark,
# 1 KiB SET and GET at concurrency 1 and 64; installed with apt-get where missing), the
# machine's raw limits (QUIC request/response loop and RocksDB with the node's settings),
# and a CPU profile of one node under workload A. `summary.md` in OUT_DIR has each
# workload's throughput as a ratio to the reference and the CPU microseconds per
# operation of the nodes and of the load generator (from /proc).
#
#   benches/baseline.sh [OUT_DIR]        (default: ./bench-results)
#
# Uses release builds; expects an otherwise idle machine.
# SKIP_BUILD=1 runs the release binaries already in $CARGO_TARGET_DIR (for example from
# `cargo build --release --workspace --bins`) instead of building them here.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shoal-target}"
OUT="${1:-bench-results}"
DURATION="${DURATION:-30s}"
mkdir -p "$OUT"
if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release -q -p shoal-node -p shoal-bench
fi
BIN="$CARGO_TARGET_DIR/release"
CLUSTER="$(mktemp -d)/cluster"

# shellcheck source=benches/dev_cluster.sh
. benches/dev_cluster.sh

echo "== machine" | tee "$OUT/machine.txt"
{ date -u; nproc; free -g | head -2; uname -r; } | tee -a "$OUT/machine.txt"

echo "== reference: redis"
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    fi
fi
if command -v redis-server >/dev/null; then
    REDIS_PORT=27399
    redis-server --port "$REDIS_PORT" --save '' --appendonly no --daemonize no \
        >"$OUT/redis.log" 2>&1 &
    REDIS=$!
    for _ in $(seq 1 50); do
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    for c in 1 64; do
        redis-benchmark -p "$REDIS_PORT" -t set,get -d 1024 -c "$c" -n $((c == 1 ? 100000 : 1000000)) \
            -r 100000 --csv -q >"$OUT/redis-c$c.csv"
        cat "$OUT/redis-c$c.csv"
    done
    kill "$REDIS"
    wait "$REDIS" 2>/dev/null || true
else
    echo "redis-server not available: no reference in this run" | tee "$OUT/redis-missing.txt"
fi

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
trap 'dev_cluster_down; rm -rf "$(dirname "$CLUSTER")"' EXIT
dev_cluster_up "$CLUSTER" 27101 29201 "$OUT/cluster.log"
BENCH=("$BIN/shoal-bench" --keys 100000 --value-size 1024 --no-progress)
# Insert the 100,000 keys once (not measured), then measure.
"${BENCH[@]}" --workload c --load --concurrency 64 --ops 1000 --json "$OUT/load.json" >"$OUT/load.txt"
NODES=$(pgrep -f "$CLUSTER/n[0-9]*/node.toml" | tr '\n' ' ')
# One run: workload $1 at concurrency $2; records the nodes' and the load generator's
# CPU seconds over the whole run (warm-up included, as are its operations).
measure() {
    local w=$1 c=$2 name="ycsb-$1-c$2" before
    before=$(cpu_of $NODES)
    # `times` in this shell (not in a pipeline or $(...), whose subshells have no
    # children): its second line is the CPU time of the finished children so far.
    times >"$OUT/.times-before"
    "${BENCH[@]}" --workload "$w" --concurrency "$c" --duration "$DURATION" --warmup 5s \
        --json "$OUT/$name.json" | tee "$OUT/$name.txt"
    times >"$OUT/.times-after"
    echo "$before $(cpu_of $NODES) $(tail -1 "$OUT/.times-before") $(tail -1 "$OUT/.times-after")" \
        >"$OUT/$name.cpu"
}
for w in a c; do
    for c in 1 32 64; do
        measure "$w" "$c"
    done
done
measure write 64
python3 benches/summarize.py "$OUT" | tee "$OUT/summary.md"

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
