#!/usr/bin/env bash
# Measures write-only throughput with every write fsynced (`durability = "sync"`) on a
# 3-node `shoal dev` cluster (N=3, W=2, 1 KiB values, 100,000 keys, concurrency 64),
# with group commit off (one fsync per write, the previous behaviour) and on, alternating
# RUNS times so that both see the same machine state. Prints one line per run and the
# medians; results go to OUT_DIR.
#
#   benches/group_commit.sh [OUT_DIR]     (default: ./bench-results/group-commit)
#
# Uses release builds; expects an otherwise idle machine.
# SKIP_BUILD=1 runs the release binaries already in $CARGO_TARGET_DIR (for example from
# `cargo build --release --workspace --bins`) instead of building them here.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shoal-target}"
OUT="${1:-bench-results/group-commit}"
DURATION="${DURATION:-20s}"
RUNS="${RUNS:-3}"
CONCURRENCY="${CONCURRENCY:-64}"
mkdir -p "$OUT"
if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release -q -p shoal-node --bin shoal
    cargo build --release -q -p shoal-bench --bin shoal-bench
fi
BIN="$CARGO_TARGET_DIR/release"
{ date -u; nproc; free -g | head -2; uname -r; git rev-parse --short HEAD; } >"$OUT/machine.txt"

# shellcheck source=benches/dev_cluster.sh
. benches/dev_cluster.sh
trap dev_cluster_down EXIT

# One run: a fresh cluster with group_commit = $1, loaded, then measured.
run() {
    local gc=$1 i=$2 dir name
    dir="$(mktemp -d)/cluster"
    name="gc-$gc-run$i"
    dev_cluster_up "$dir" 27601 29601 "$OUT/$name.cluster.log" \
        "$(printf '[storage]\ndurability = "sync"\ngroup_commit = %s' "$gc")"
    "$BIN/shoal-bench" --keys 100000 --value-size 1024 --no-progress --workload write \
        --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup 3s \
        --json "$OUT/$name.json" >"$OUT/$name.txt"
    # Writes per fsync over the run, from the nodes' group-commit histograms.
    for port in 29601 29602 29603; do
        curl -s "http://127.0.0.1:$port/metrics" | grep -E '^shoal_group_commit_writes_(sum|count)' || true
    done | awk '/_sum/ {s += $NF} /_count/ {c += $NF} END {printf "%d %d\n", s, c}' >"$OUT/$name.fsyncs"
    dev_cluster_down
    rm -rf "$(dirname "$dir")"
    python3 - "$OUT/$name.json" "$gc" "$i" "$OUT/$name.fsyncs" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
u = r["ops"]["update"]
writes, syncs = (int(x) for x in open(sys.argv[4]).read().split())
per = f"{writes / syncs:.1f}" if syncs else "-"
print(f"group_commit={sys.argv[2]} run={sys.argv[3]} ops/s={r['throughput']:.0f} "
      f"p50_us={u['p50_us']} p99_us={u['p99_us']} errors={r['errors_total']} writes_per_fsync={per}")
PY
}

# Not `done | tee`: the loop would run in a subshell, whose cluster the EXIT trap
# (in this shell) could not see to stop after a failure.
: >"$OUT/runs.txt"
for i in $(seq 1 "$RUNS"); do
    for gc in false true; do
        run "$gc" "$i" >>"$OUT/runs.txt"
        tail -n 1 "$OUT/runs.txt"
    done
done
python3 benches/medians.py "$OUT/runs.txt" group_commit | tee "$OUT/summary.txt"
