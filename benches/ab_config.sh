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
# (benches/ab_variants.sh with two variants; backslash escapes in the TOML are expanded.)
# SKIP_BUILD=1 runs the release binaries already in $CARGO_TARGET_DIR (for example from
# `cargo build --release --workspace --bins`) instead of building them here.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shoal-target}"
BIN=$1; OUT=$2; TA=$3; TB=$4
if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release -q -p shoal-bench --bin shoal-bench
fi
# The runs of benches/ab_variants.sh with two variants: A B, B A, A B, ...
BENCH=$CARGO_TARGET_DIR/release/shoal-bench WORKLOAD=${WORKLOAD:-a} \
    exec benches/ab_variants.sh "$BIN" "$OUT" "A||$TA" "B||$TB"
