#!/usr/bin/env bash
# `make test`: unit and layout tests once, then every end-to-end suite against each OpenSIPS.
#
# Which OpenSIPS: $OPENSIPS (one binary) when set; otherwise every version that
# tools/build-opensips.sh can build from the tarballs in OPENSIPS_SRC_DIR (built once into
# OPENSIPS_CACHE, then reused). With neither, the end-to-end suites are skipped loudly.
#
# For each version the module is built against that binary (build.rs reads `opensips -V`),
# kept as target/modules/<version>/sso_auth.so, and the suites run with it. One summary line
# per version and suite at the end; exit 1 if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
started=$(date +%s)
python=${PYTHON:-python3}
cargo=${CARGO:-cargo}
logs=$repo/target/test-logs
mkdir -p "$logs"

summary=()
status=0
note() { summary+=("$1"); echo "$1"; }

e2e_only=0
[ "${1:-}" = "--e2e-only" ] && e2e_only=1

if [ $e2e_only = 1 ]; then
    :
elif echo "=== unit and layout tests" && $cargo test 2>&1 | tee "$logs/unit.log"; then
    note "unit: $(grep -E '^test result:' "$logs/unit.log" | awk '{p+=$4; f+=$6} END {print p" passed, "f" failed"}')"
else
    note "unit: FAILED (see $logs/unit.log)"
    status=1
fi

binaries=()
if [ -n "${OPENSIPS:-}" ]; then
    binaries=("$OPENSIPS")
else
    if tools/build-opensips.sh; then :; else
        rc=$?
        [ $rc = 2 ] || { note "opensips build: FAILED"; status=1; }
    fi
    while read -r _v bin; do binaries+=("$bin"); done < <(tools/build-opensips.sh --list)
fi

if [ ${#binaries[@]} -eq 0 ]; then
    echo "=================================================================="
    echo "E2E SKIPPED: no OpenSIPS binary (OPENSIPS=) and no tarball in"
    echo "${OPENSIPS_SRC_DIR:-../shared/opensips-src}: only unit and layout tests ran"
    echo "=================================================================="
    note "e2e: SKIPPED (no OpenSIPS)"
fi

# Runs one suite; its last line is its summary ("<suite>: N passed, N failed, N skipped").
run_suite() {
    local ver=$1 name=$2 log=$logs/$ver-$2.log; shift 2
    echo "=== $ver: $name"
    "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]} last
    last=$(grep -E '^[a-z0-9_-]+: [0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
    [ -n "$last" ] || last="$name: no summary line (exit $rc)"
    [ $rc = 0 ] || { status=1; last="$last  <-- FAILED (exit $rc, log $log)"; }
    note "$ver $last"
}

# Phase 1, CPU-bound: the module for every version. Phase 2 runs the timing-sensitive suites
# with nothing compiling beside them.
declare -A version_of
ready=()
for bin in "${binaries[@]}"; do
    ver=$("$bin" -V 2>&1 | sed -n 's/^version: opensips \([^ ]*\).*/\1/p')
    [ -n "$ver" ] || { note "$bin: cannot read its version"; status=1; continue; }
    echo "=== building sso_auth.so for OpenSIPS $ver ($bin)"
    mods=$repo/target/modules/$ver
    mkdir -p "$mods"
    # The panic-test variant (a function that panics, to prove the guard) shares the target
    # dir: only the crate itself is compiled twice.
    if OPENSIPS=$bin $cargo build --release 2>&1 | tail -3 \
        && cp target/release/libsso_auth.so "$mods/sso_auth.so" \
        && OPENSIPS=$bin $cargo build --release --features panic-test 2>&1 | tail -3 \
        && cp target/release/libsso_auth.so "$mods/sso_auth-panic-test.so"; then
        version_of[$bin]=$ver
        ready+=("$bin")
    else
        note "$ver build: FAILED"
        status=1
    fi
done

for bin in "${ready[@]}"; do
    ver=${version_of[$bin]}
    mods=$repo/target/modules/$ver
    echo "=================================================================="
    echo "OpenSIPS $ver ($bin)"
    echo "=================================================================="
    v_start=$(date +%s)
    export OPENSIPS=$bin SSO_AUTH_MODULE=$mods/sso_auth.so SSO_AUTH_PANIC_MODULE=$mods/sso_auth-panic-test.so
    run_suite "$ver" e2e "$python" tests/e2e/run.py
    # A real OAuth2 server, real phones, two nodes sharing Redis.
    for suite in glewlwyd phones cluster; do
        [ -f "tests/e2e/$suite.py" ] && run_suite "$ver" "$suite" "$python" "tests/e2e/$suite.py"
    done
    note "$ver suites' wall time: $(( $(date +%s) - v_start )) s"
    unset OPENSIPS SSO_AUTH_MODULE SSO_AUTH_PANIC_MODULE
done

echo
echo "=================================================================="
echo "make test summary"
printf '  %s\n' "${summary[@]}"
echo "  total wall time: $(( $(date +%s) - started )) s"
[ $status = 0 ] && echo "  result: PASS" || echo "  result: FAIL"
echo "=================================================================="
# One closing line over every suite and version, in the plain form CI reads.
printf '%s\n' "${summary[@]}" | grep -oE '[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?' \
    | awk -v st=$status '{p+=$1; f+=$3; s+=$5} END {if (st && !f) f=1; printf "all: %d passed, %d failed, %d skipped\n", p, f, s}'
exit $status
