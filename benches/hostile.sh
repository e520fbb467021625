#!/usr/bin/env bash
# Measures BENCHMARKS.md's "Hostile clients" table (issue 11): workload A at concurrency
# 64 against a 3-node `shoal dev` cluster (N=3, R=2, W=2, 1 KiB values, 100,000 keys),
# alone and then with one hostile client of each kind of `shoal-hostile` running for the
# whole measured window, under its own client certificate (`hostile`).
#
#   benches/hostile.sh [OUT_DIR]        (default: ./bench-results/hostile)
#
# Release builds; expects an otherwise idle machine. DURATION (default 20s) is the
# measured window of each run, after a 3 s warm-up.
# SKIP_BUILD=1 runs the release binaries already in $CARGO_TARGET_DIR (for example from
# `cargo build --release --workspace --bins`) instead of building them here.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shoal-target}"
OUT="${1:-bench-results/hostile}"
DURATION="${DURATION:-20s}"
WARMUP=3s
mkdir -p "$OUT"
if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release -q -p shoal-node -p shoal-bench
    cargo build --release -q -p shoal-tests --bin shoal-hostile
fi
BIN="$CARGO_TARGET_DIR/release"
CLUSTER="$(mktemp -d)/cluster"

{ date -u; git rev-parse --short HEAD; nproc; free -g | head -2; uname -r; } | tee "$OUT/machine.txt"

# shellcheck source=benches/dev_cluster.sh
. benches/dev_cluster.sh
trap 'dev_cluster_down; rm -rf "$(dirname "$CLUSTER")"' EXIT
dev_cluster_up "$CLUSTER" 27301 29401 "$OUT/cluster.log"

# The hostile client's own identity and config (same seeds as the dev client).
"$BIN/shoal" cert client --ca "$CLUSTER" --name hostile --out "$CLUSTER/hostile" >/dev/null
{
    grep -E '^\s*seeds' "$CLUSTER/client.toml"
    printf '\n[tls]\nca = "%s"\ncert = "%s"\nkey = "%s"\n' \
        "$CLUSTER/ca.pem" "$CLUSTER/hostile/client.pem" "$CLUSTER/hostile/client.key"
} >"$CLUSTER/hostile.toml"

BENCH=("$BIN/shoal-bench" --keys 100000 --value-size 1024 --no-progress)
"${BENCH[@]}" --workload c --load --concurrency 64 --ops 1000 >"$OUT/load.txt"

# Seconds the hostile client runs: the bench's warm-up and window, plus a margin.
secs=$(( ${DURATION%s} + ${WARMUP%s} + 2 ))
for kind in none huge-timeouts half-frames unread-responses many-connections handshake-flood \
    malformed-frames peer-messages status-flood; do
    H=""
    if [ "$kind" != none ]; then
        "$BIN/shoal-hostile" --config "$CLUSTER/hostile.toml" --kind "$kind" \
            --duration "${secs}s" --grace 2s --max-actions 100000000 --json \
            >"$OUT/hostile-$kind.json" 2>"$OUT/hostile-$kind.err" &
        H=$!
    fi
    echo "== workload A, concurrency 64, hostile: $kind"
    "${BENCH[@]}" --workload a --concurrency 64 --duration "$DURATION" --warmup "$WARMUP" \
        --json "$OUT/ycsb-a-c64-$kind.json" | tee "$OUT/ycsb-a-c64-$kind.txt"
    if [ -n "$H" ]; then
        wait "$H" || echo "shoal-hostile $kind exited with $?"
    fi
done
