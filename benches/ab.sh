#!/usr/bin/env bash
# A/B comparison of two builds of the `shoal` binary on one workload, runs alternating
# (A, B, B, A, A, B, ...) so that both see the same machine state: each run starts a fresh
# 3-node `shoal dev` cluster with that build, inserts the 100,000 keys (not measured),
# measures, and records throughput, latency and the nodes' CPU microseconds per
# operation (from /proc). Prints each run and the medians; p50 and p99 are those of the
# slower of the workload's operation kinds.
#
#   benches/ab.sh A_DIR B_DIR [OUT_DIR]
#
# A_DIR and B_DIR each hold a `shoal` binary. Environment: WORKLOAD (a), CONCURRENCY
# (64), RUNS (3), DURATION (20s), EXTRA_TOML (appended to every node's config).
# shoal-bench is the release build of this checkout, or BENCH_BIN (for example an older
# build, whose wire version both builds under test accept); with BENCH_FROM_BUILD=1 each
# side runs the shoal-bench in its own directory (to compare load generator changes too).
# Expects an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shoal-target}"
A_DIR=$1
B_DIR=$2
OUT="${3:-bench-results/ab}"
WORKLOAD="${WORKLOAD:-a}"
CONCURRENCY="${CONCURRENCY:-64}"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-20s}"
mkdir -p "$OUT"
if [ -z "${BENCH_BIN:-}" ]; then
    cargo build --release -q -p shoal-bench --bin shoal-bench
    BENCH_BIN="$CARGO_TARGET_DIR/release/shoal-bench"
fi
{ date -u; nproc; free -g | head -2; uname -r; git rev-parse --short HEAD; echo "A=$A_DIR B=$B_DIR"; } >"$OUT/machine.txt"

# shellcheck source=benches/dev_cluster.sh
. benches/dev_cluster.sh
trap dev_cluster_down EXIT

run() {
    local label=$1 i=$2 dir name nodes before after bench
    BIN=$3
    bench="$BENCH_BIN"
    if [ -n "${BENCH_FROM_BUILD:-}" ]; then
        bench="$BIN/shoal-bench"
    fi
    dir="$(mktemp -d)/cluster"
    name="$label-run$i"
    dev_cluster_up "$dir" 27701 29701 "$OUT/$name.cluster.log" "${EXTRA_TOML:-}"
    "$bench" --keys 100000 --value-size 1024 --no-progress --workload c --load \
        --concurrency 64 --ops 1000 --json "$OUT/$name.load.json" >/dev/null
    nodes=$(pgrep -f "$dir/n[0-9]*/node.toml" | tr '\n' ' ')
    before=$(cpu_of $nodes)
    "$bench" --keys 100000 --value-size 1024 --no-progress --workload "$WORKLOAD" \
        --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup 3s \
        --json "$OUT/$name.json" >"$OUT/$name.txt"
    after=$(cpu_of $nodes)
    dev_cluster_down
    rm -rf "$(dirname "$dir")"
    python3 - "$OUT/$name.json" "$label" "$i" "$before" "$after" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ops = r["ops_total"] + r["warmup_ops"]
cpu_us = (float(sys.argv[5]) - float(sys.argv[4])) * 1e6 / max(ops, 1)
p = lambda q: max(o[q] for o in r["ops"].values())
print(f"build={sys.argv[2]} run={sys.argv[3]} ops/s={r['throughput']:.0f} "
      f"p50_us={p('p50_us')} p99_us={p('p99_us')} node_cpu_us_per_op={cpu_us:.0f} "
      f"errors={r['errors_total']}")
PY
}

# Not `done | tee`: the loop would run in a subshell, whose cluster the EXIT trap
# (in this shell) could not see to stop after a failure.
: >"$OUT/runs.txt"
# Pairs alternate their order (A B, B A, A B, ...), so that neither build always runs
# first: in the four workload-A A/Bs of 2026-12-04 the first run (then always A) was
# A's slowest.
for i in $(seq 1 "$RUNS"); do
    order="A B"
    if [ $((i % 2)) -eq 0 ]; then order="B A"; fi
    for build in $order; do
        if [ "$build" = A ]; then dir=$A_DIR; else dir=$B_DIR; fi
        run "$build" "$i" "$dir" >>"$OUT/runs.txt"
        tail -n 1 "$OUT/runs.txt"
    done
done
python3 benches/medians.py "$OUT/runs.txt" build | tee "$OUT/summary.txt"
