#!/usr/bin/env bash
# A short fuzz run of every target: installs cargo-fuzz where missing (it needs the nightly
# toolchain that this machine kind has beside stable), refreshes the seed corpus, and runs
# each target for SECONDS seconds (default 30). A crash leaves its input in
# fuzz/artifacts/<target>/; the other targets still run, and the script fails at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shoal-target}/fuzz"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
cargo run --quiet --manifest-path fuzz/Cargo.toml --bin seed_corpus
failed=()
for target in frame_decoder wire_request wire_response object_codec aae_messages aae_exchange; do
    echo "== fuzz $target (${seconds}s)"
    cargo +nightly fuzz run "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 ||
        failed+=("$target")
done
if ((${#failed[@]})); then
    echo "== crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "== no crash"
