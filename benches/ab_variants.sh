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
RUNS=${RUNS:-3}; DURATION=${DURATION:-15s}; WORKLOAD=${WORKLOAD:-write}; CONC=${CONCURRENCY:-64}
BENCH=${BENCH:-$BIN/shoal-bench}
# shellcheck source=benches/dev_cluster.sh
. benches/dev_cluster.sh
trap dev_cluster_down EXIT
run() {
  local label=$1 i=$2 envs=$3 toml=$4 dir nodes before after
  dir=$(mktemp -d)/cluster
  for kv in $envs; do export "$kv"; done
  dev_cluster_up "$dir" 27901 29901 "$OUT/$label$i.log" "$toml"
  for kv in $envs; do unset "${kv%%=*}"; done
  $BENCH --keys 100000 --value-size 1024 --no-progress --workload c --load --concurrency 64 --ops 1000 >/dev/null
  nodes=$(pgrep -f "$dir/n[0-9]*/node.toml" | tr '\n' ' ')
  before=$(cpu_of $nodes)
  $BENCH --keys 100000 --value-size 1024 --no-progress --workload $WORKLOAD --concurrency $CONC --duration $DURATION --warmup 3s --json $OUT/$label$i.json > /dev/null
  after=$(cpu_of $nodes)
  dev_cluster_down
  rm -rf "$(dirname "$dir")"
  python3 - "$OUT/$label$i.json" "$label" "$i" "$before" "$after" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ops = r["ops_total"] + r["warmup_ops"]
cpu_us = (float(sys.argv[5]) - float(sys.argv[4])) * 1e6 / max(ops, 1)
p = lambda q: max(o[q] for o in r["ops"].values())
print(f"cfg={sys.argv[2]} run={sys.argv[3]} ops/s={r['throughput']:.0f} p50_us={p('p50_us')} p99_us={p('p99_us')} node_cpu_us_per_op={cpu_us:.0f} errors={r['errors_total']}", flush=True)
PY
}
n=$#
for i in $(seq 1 $RUNS); do
  for k in $(seq 0 $((n-1))); do
    idx=$(( (k + i - 1) % n ))
    v=${@:$((idx+1)):1}
    label=${v%%|*}; rest=${v#*|}; envs=${rest%%|*}; toml=${rest#*|}
    run "$label" "$i" "$envs" "$(printf '%b' "$toml")"
  done
done
