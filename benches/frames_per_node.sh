#!/usr/bin/env bash
# Compares the SDK's `frames_per_node` settings on one 3-node `shoal dev` cluster
# (benches/client_ab.sh with `--frames-per-node K` for each K given; same environment).
#
#   benches/frames_per_node.sh OUT_DIR "K1 K2 ..."
set -euo pipefail
OUT=$1; KS=$2
variants=()
for k in $KS; do variants+=("--frames-per-node $k"); done
exec "$(dirname "$0")/client_ab.sh" "$OUT" "${variants[@]}"
