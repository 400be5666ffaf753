#!/usr/bin/env bash
# Runs the fuzz targets one after the other, each from a fresh copy of its committed seed corpus.
#
#   FUZZ_RUNS=N        stop each target after N executions (default 5000000)
#   FUZZ_SECONDS=S     stop each target after S seconds instead (takes precedence over FUZZ_RUNS)
#   FUZZ_MAX_SECONDS=S time bound of a FUZZ_RUNS run (default 900)
#   FUZZ_TARGETS="a b" only these targets (default: all seven)
#   FUZZ_WAIT_SIPP=S   before the build and before each target, wait while a `sipp` process runs
#                      (a benchmark would be disturbed and would disturb us), polling every 20 s,
#                      at most S seconds in total (default 900; 0 = do not wait)
#   FUZZ_EXTRA=...     extra libFuzzer arguments, appended as is (e.g. "-dict=foo")
#
# cargo-fuzz needs nightly-only rustc flags (-Zsanitizer=address, sancov passes); with only a
# stable toolchain, RUSTC_BOOTSTRAP=1 unlocks them. Targets are built with debug assertions, so
# integer overflow and debug_assert! count as crashes too.
#
# A dictionary fuzz/dict/<target>.dict is used when present.
#
# For every target the script prints libFuzzer's final "Done N runs in S second(s)" line and a
# summary line; new corpus entries and the log stay in fuzz/work/<target>/ and fuzz/work/<target>.log,
# a crashing input in fuzz/artifacts/<target>/. Exit status 1 if any target crashed.
set -uo pipefail
cd "$(dirname "$0")"
# The whole script is one block, read before it runs: editing this file during a run is safe.
{

runs=${FUZZ_RUNS:-5000000}
secs=${FUZZ_SECONDS:-}
max_secs=${FUZZ_MAX_SECONDS:-900}
targets=${FUZZ_TARGETS:-"authorization_header token_header aor introspection_json token_json jwt claims"}
wait_budget=${FUZZ_WAIT_SIPP:-900}
extra=${FUZZ_EXTRA:-}

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
export RUSTC_BOOTSTRAP=1

# Waits while sipp runs; the budget (wall-clock) is shared by all waits of this invocation.
wait_deadline=$((SECONDS + wait_budget))
wait_for_sipp() {
    while [ "$SECONDS" -lt "$wait_deadline" ] && pgrep -x sipp >/dev/null; do
        echo "   sipp is running (benchmark?); waiting 20 s ($((wait_deadline - SECONDS))s of waiting left)"
        sleep 20
    done
    if pgrep -x sipp >/dev/null; then
        echo "   sipp still running, waiting budget used up: going on anyway"
    fi
}

wait_for_sipp
echo "== building the fuzz targets"
cargo fuzz build --debug-assertions || { echo "fuzz build failed"; exit 2; }

if [ -n "$secs" ]; then
    mode=(-max_total_time="$secs")
    echo "== mode: ${secs}s per target"
else
    mode=(-runs="$runs" -max_total_time="$max_secs")
    echo "== mode: $runs executions per target (at most ${max_secs}s)"
fi

mkdir -p work
failed=0
summary=()
for t in $targets; do
    [ -d "corpus/$t" ] || { echo "no seed corpus for '$t'"; exit 2; }
    work="work/$t"
    rm -rf "$work"
    mkdir -p "$work" "artifacts/$t"
    cp corpus/"$t"/* "$work"/
    wait_for_sipp
    echo "== $t"
    # $extra is split on purpose.
    # shellcheck disable=SC2086
    dict=()
    [ -f "dict/$t.dict" ] && dict=(-dict="dict/$t.dict")
    cargo fuzz run --debug-assertions "$t" "$work" -- \
        "${mode[@]}" -max_len=65536 -print_final_stats=1 "${dict[@]}" $extra >"work/$t.log" 2>&1
    rc=$?
    done_line=$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "work/$t.log" | tail -1)
    final=$(grep -E '^#[0-9]+[[:space:]]+DONE ' "work/$t.log" | tail -1)
    if [ $rc -ne 0 ] || [ -z "$done_line" ]; then
        failed=1
        echo "   CRASH or failure (exit $rc); log: fuzz/work/$t.log"
        grep -E "panicked|ERROR: |SUMMARY|Test unit written|artifact_prefix" "work/$t.log" | head -8 | sed 's/^/   /'
        summary+=("$t: CRASH (exit $rc), see fuzz/work/$t.log")
    else
        echo "   $done_line"
        echo "   $final"
        summary+=("$t: $done_line; corpus $(ls "$work" | wc -l) files")
    fi
done

echo "== summary"
printf '%s\n' "${summary[@]}"
exit $failed
}
