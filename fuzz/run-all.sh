#!/usr/bin/env bash
# Runs every fuzz target for SECONDS_EACH seconds (default 120) from the committed seeds.
# Needs a nightly toolchain and cargo-fuzz: `cargo install cargo-fuzz`.
set -euo pipefail
cd "$(dirname "$0")"
each="${SECONDS_EACH:-120}"
for target in restoration_decode store_open server_request pull_page; do
    mkdir -p "corpus/$target"
    dict=()
    [[ -f "$target.dict" ]] && dict=("-dict=$target.dict")
    cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$each" -rss_limit_mb=4096 -timeout=10 "${dict[@]}"
done
