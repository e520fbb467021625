#!/usr/bin/env bash
# A join's transfer under foreground load (issue 9's benchmark): a 3-node `shoal dev`
# cluster holding KEYS keys of 1 KiB; workload A at concurrency 16 for one slice before
# the join; then a fourth node (`shoal dev add`) joins and workload A runs in slices of
# SLICE until the change settles (versions in use = [2], no transfer pending or
# running; polled every 0.5 s). Prints the transfer's time, bytes and keys (the joiner's
# shoal_transfer_bytes_total / shoal_transfer_keys_total) and each slice's p50/p99.
#
#   benches/join_transfer.sh [OUT_DIR]
#
# Environment: KEYS (1000000), SLICE (10s). Expects an otherwise idle machine.
# SKIP_BUILD=1 runs the release binaries already in $CARGO_TARGET_DIR (for example from
# `cargo build --release --workspace --bins`) instead of building them here.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shoal-target}"
OUT="${1:-bench-results/join}"
KEYS="${KEYS:-1000000}"
SLICE="${SLICE:-10s}"
mkdir -p "$OUT"
if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release -q -p shoal-node -p shoal-bench --bin shoal --bin shoal-bench
fi
BIN="$CARGO_TARGET_DIR/release"
BENCH="$BIN/shoal-bench"
{ date -u; nproc; free -g | head -2; git rev-parse --short HEAD; echo "KEYS=$KEYS"; } >"$OUT/machine.txt"
# shellcheck source=benches/dev_cluster.sh
. benches/dev_cluster.sh
JOINER_PID=""
cleanup() {
    [ -n "$JOINER_PID" ] && kill "$JOINER_PID" 2>/dev/null || true
    dev_cluster_down
    if [ -n "${dir:-}" ]; then rm -rf "$(dirname "$dir")"; fi
}
trap cleanup EXIT
dir="$(mktemp -d)/cluster"
dev_cluster_up "$dir" 27501 29501 "$OUT/cluster.log" ""
echo "loading $KEYS keys"
"$BENCH" --keys "$KEYS" --value-size 1024 --no-progress --workload c --load \
    --concurrency 64 --ops 1000 >/dev/null
slice() {
    "$BENCH" --keys "$KEYS" --value-size 1024 --no-progress --workload a \
        --concurrency 16 --duration "$SLICE" --warmup 1s --json "$OUT/$1.json" >/dev/null
    python3 - "$OUT/$1.json" "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ops = r["ops"]
print(f"{sys.argv[2]}: {r['throughput']:.0f} ops/s, "
      + ", ".join(f"{k} p50 {v['p50_us']} us p99 {v['p99_us']} us" for k, v in sorted(ops.items()))
      + f", errors {r['errors_total']}", flush=True)
PY
}
slice before
id=$("$BIN/shoal" dev add --dir "$dir")
"$BIN/shoal" node --config "$dir/$id/node.toml" >"$OUT/joiner.log" 2>&1 &
JOINER_PID=$!
metrics=$(awk -F'"' '/^metrics_listen/ {print $2}' "$dir/$id/node.toml")
for _ in $(seq 1 100); do
    "$BIN/shoal" cluster status --json | grep -q "\"$id\"" && break
    sleep 0.2
done
"$BIN/shoal" cluster join "$id" >/dev/null
"$BIN/shoal" cluster plan | tee "$OUT/plan.txt"
start=$(date +%s.%N)
"$BIN/shoal" cluster commit --version 1
rm -f "$OUT/settled"
(
    for _ in $(seq 1 2400); do
        status=$("$BIN/shoal" cluster status --json 2>/dev/null || echo '{}')
        if python3 -c 'import json,sys; s=json.loads(sys.argv[1]); t=s["transfers"]; sys.exit(0 if s["versions_in_use"]==[2] and t["pending"]+t["running"]==0 else 1)' "$status" 2>/dev/null; then
            date +%s.%N >"$OUT/settled"
            exit 0
        fi
        sleep 0.5
    done
) &
i=0
while [ ! -f "$OUT/settled" ]; do
    i=$((i + 1))
    slice "during-$i"
    [ "$i" -lt 60 ] || { echo "the join did not settle"; exit 1; }
done
end=$(cat "$OUT/settled")
# Where the data is once settled: each node's keys and the partitions whose replicas'
# roots differ (writes of the running slice can be in flight between replicas).
"$BIN/shoal" aae status --json >"$OUT/aae-settled.json"
python3 - "$OUT/aae-settled.json" "$id" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
keys, unequal = {}, 0
for p in s["partitions"]:
    unequal += not p["equal"]
    for r in p["replicas"]:
        keys[r["node"]] = keys.get(r["node"], 0) + r["keys"]
print(f"settled: keys per node {dict(sorted(keys.items()))}, the joiner {sys.argv[2]}; "
      f"{unequal} of {len(s['partitions'])} partitions with unequal roots at that moment")
PY
scrape=$(curl -s "http://$metrics/metrics" 2>/dev/null || python3 -c "import urllib.request,sys; print(urllib.request.urlopen('http://$metrics/metrics').read().decode())")
keys=$(echo "$scrape" | awk '/^shoal_transfer_keys_total/ {s += $2} END {print s + 0}')
bytes=$(echo "$scrape" | awk '/^shoal_transfer_bytes_total/ {s += $2} END {print s + 0}')
python3 - "$start" "$end" "$keys" "$bytes" <<'PY'
import sys
start, end, keys, nbytes = map(float, sys.argv[1:])
t = end - start
print(f"join settled in {t:.1f} s: the joiner pulled "
      f"{keys:.0f} keys, {nbytes / 1e6:.1f} MB: {keys / t:.0f} keys/s, "
      f"{nbytes / 1e6 / t:.2f} MB/s")
PY
slice after
