#!/usr/bin/env bash
# A/B comparison of two node configs with one build of `shoal`, runs alternating (A, B, B, A,
# A, B, ...) as in benches/ab.sh: each run starts a fresh 3-node `shoal dev` cluster
# with TOML_A or TOML_B appended to every node's config, loads 100,000 keys of 1 KiB
# (not measured), measures, and prints throughput, p50/p99 of the slower operation kind
# and the nodes' CPU microseconds per operation (from /proc).
#
#   benches/ab_config.sh BIN_DIR OUT_DIR "TOML_A" "TOML_B"
#
# Environment: WORKLOAD (a), CONCURRENCY (64), RUNS (3), DURATION (15s). Expects the
# release shoal-bench of this checkout and an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shoal-target}"
BIN=$1; OUT=$2; TA=$3; TB=$4; mkdir -p $OUT
RUNS=${RUNS:-3}; DURATION=${DURATION:-15s}; WORKLOAD=${WORKLOAD:-a}; CONC=${CONCURRENCY:-64}
cargo build --release -q -p shoal-bench --bin shoal-bench
BENCH=$CARGO_TARGET_DIR/release/shoal-bench
. benches/dev_cluster.sh
trap dev_cluster_down EXIT
run() {
  local label=$1 i=$2 toml=$3 dir nodes before after
  dir=$(mktemp -d)/cluster
  dev_cluster_up "$dir" 27901 29901 "$OUT/$label$i.log" "$toml"
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
# Pairs alternate their order (A B, B A, ...), so that neither side always runs first
# (see benches/ab.sh).
for i in $(seq 1 $RUNS); do
  if [ $((i % 2)) -eq 1 ]; then run A $i "$TA"; run B $i "$TB"; else run B $i "$TB"; run A $i "$TA"; fi
done
