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
export WORKLOAD CONCURRENCY DURATION
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
    local label=$1 i=$2 bench="$BENCH_BIN"
    BIN=$3
    if [ -n "${BENCH_FROM_BUILD:-}" ]; then
        bench="$BIN/shoal-bench"
    fi
    measure_run build "$label" "$i" "$bench" 27701 29701 "$OUT/$label-run$i" "${EXTRA_TOML:-}"
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
