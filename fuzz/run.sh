#!/usr/bin/env bash
# Runs every fuzz target for FUZZ_SECONDS (default 600) each, starting from the committed seed
# corpus. cargo-fuzz needs nightly features; with only a stable toolchain, RUSTC_BOOTSTRAP=1
# enables them. Prints the execution count of each target.
set -euo pipefail
cd "$(dirname "$0")"
secs=${FUZZ_SECONDS:-600}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
export RUSTC_BOOTSTRAP=1
for t in authorization_header token_header aor introspection_json token_json; do
    work=$(mktemp -d)
    cp corpus/$t/* "$work"/
    echo "== $t for ${secs}s"
    cargo fuzz run "$t" "$work" -- -max_total_time="$secs" -max_len=65536 2>&1 | tee "/tmp/fuzz-$t.log" | grep -E "^(Done|#[0-9]+ +DONE)|crash|panicked" || true
    grep -E "Done [0-9]+ runs" "/tmp/fuzz-$t.log" | tail -1
done
