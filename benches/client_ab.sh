#!/usr/bin/env bash
# Compares shoal-bench client settings on one 3-node `shoal dev` cluster: loads 100,000
# keys of 1 KiB (not measured), then runs shoal-bench with each set of flags given,
# ROUNDS times (the order reversed every other round), and prints per run the
# throughput, p50/p99 of the slower operation kind, and the CPU microseconds per
# operation of the nodes (from /proc) and of the load generator (from time(1)).
#
#   benches/client_ab.sh OUT_DIR "FLAGS A" "FLAGS B" ...
#   e.g. WL=c C=1 benches/client_ab.sh out "--direct-reads true" "--direct-reads false"
#
# Environment: BIN (the directory of the release `shoal` and `shoal-bench`; default
# $CARGO_TARGET_DIR/release), WL (workload, c), C (concurrency, 64), DUR (15s),
# ROUNDS (3), EXTRA (TOML appended to every node's config). Expects an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$1; shift; mkdir -p "$OUT"
BIN=${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/shoal-target}/release}; BENCH=$BIN/shoal-bench
WL=${WL:-c}; C=${C:-64}; DUR=${DUR:-15s}; ROUNDS=${ROUNDS:-3}
# shellcheck source=benches/dev_cluster.sh
. benches/dev_cluster.sh
tmp=$(mktemp -d)
trap 'dev_cluster_down; rm -rf "$tmp"' EXIT
dev_cluster_up "$tmp/cluster" 27801 29801 "$OUT/cluster.log" "${EXTRA:-}"
"$BENCH" --keys 100000 --value-size 1024 --no-progress --workload c --load --concurrency 64 --ops 1000 >/dev/null
# shellcheck disable=SC2046
nodes=$(pgrep -f "$tmp/cluster/n[0-9]*/node.toml" | tr '\n' ' ')
variants=("$@")
for i in $(seq 1 "$ROUNDS"); do
  order=$(seq 0 $((${#variants[@]} - 1)))
  [ $((i % 2)) = 0 ] && order=$(echo "$order" | tac)
  for v in $order; do
    flags=${variants[$v]}
    # shellcheck disable=SC2086
    before=$(cpu_of $nodes)
    # shellcheck disable=SC2086
    /usr/bin/time -f "%U %S" -o "$OUT/t.$v.$i" "$BENCH" --keys 100000 --value-size 1024 --no-progress \
      --workload "$WL" --concurrency "$C" --duration "$DUR" --warmup 2s $flags \
      --json "$OUT/$v.$i.json" >/dev/null
    # shellcheck disable=SC2086
    after=$(cpu_of $nodes)
    python3 - "$OUT/$v.$i.json" "$OUT/t.$v.$i" "$flags" "$i" "$before" "$after" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
u, s = map(float, open(sys.argv[2]).read().split()[-2:])
ops = r["ops_total"] + r["warmup_ops"]
p = lambda q: max(o[q] for o in r["ops"].values())
node = (float(sys.argv[6]) - float(sys.argv[5])) * 1e6 / ops
print(f"[{sys.argv[3]}] run={sys.argv[4]} ops/s={r['throughput']:.0f} p50_us={p('p50_us')} "
      f"p99_us={p('p99_us')} node_cpu_us_per_op={node:.0f} bench_cpu_us_per_op={(u + s) * 1e6 / ops:.1f} "
      f"errors={r['errors_total']}", flush=True)
PY
  done
done
