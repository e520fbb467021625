#!/usr/bin/env bash
# Compares several node configurations with one build, as benches/ab_config.sh does for
# two: each run starts a fresh 3-node `shoal dev` cluster, loads 100,000 keys of 1 KiB
# (not measured), measures, and prints throughput, p50/p99 of the slower operation kind
# and the nodes' CPU microseconds per operation (from /proc). Each round runs every
# variant once, starting one later each round, so that none always runs first.
#
#   benches/ab_variants.sh BIN_DIR OUT_DIR VARIANT...
#
# A VARIANT is `label|ENV=VALUE ...|toml`: the environment the nodes start with (may be
# empty) and TOML appended to every node's config (`\n` for a new line), e.g.
# 'sync||[storage]\ndurability = "sync"'. BIN_DIR holds the release `shoal` and
# `shoal-bench` (BENCH: another shoal-bench). Environment: WORKLOAD (write), CONCURRENCY
# (64), RUNS (3), DURATION (15s).
# Expects an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$1; OUT=$2; shift 2; mkdir -p $OUT
RUNS=${RUNS:-3}; DURATION=${DURATION:-15s}; WORKLOAD=${WORKLOAD:-write}; CONCURRENCY=${CONCURRENCY:-64}
export WORKLOAD CONCURRENCY DURATION
BENCH=${BENCH:-$BIN/shoal-bench}
# shellcheck source=benches/dev_cluster.sh
. benches/dev_cluster.sh
trap dev_cluster_down EXIT
run() {
  local label=$1 i=$2 envs=$3 toml=$4
  # The nodes start with the variant's environment; shoal-bench runs without it.
  NODE_ENV=$envs measure_run cfg "$label" "$i" "$BENCH" 27901 29901 "$OUT/$label$i" "$toml"
}
: >"$OUT/runs.txt"
n=$#
for i in $(seq 1 $RUNS); do
  for k in $(seq 0 $((n-1))); do
    idx=$(( (k + i - 1) % n ))
    v=${@:$((idx+1)):1}
    label=${v%%|*}; rest=${v#*|}; envs=${rest%%|*}; toml=${rest#*|}
    run "$label" "$i" "$envs" "$(printf '%b' "$toml")" >>"$OUT/runs.txt"
    tail -n 1 "$OUT/runs.txt"
  done
done
python3 benches/medians.py "$OUT/runs.txt" cfg | tee "$OUT/summary.txt"
