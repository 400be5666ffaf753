#!/usr/bin/env bash
# Builds the OpenSIPS releases the module supports from their source tarballs into a cache
# outside the source tree, the way `cargo pgrx init` builds PostgreSQL versions.
#
#   tools/build-opensips.sh                 every opensips-<version>.tar.gz in OPENSIPS_SRC_DIR
#   tools/build-opensips.sh 3.6.8 4.0.1     only these versions
#   tools/build-opensips.sh --list          print "<version> <binary>" for what is built, build nothing
#   tools/build-opensips.sh --newest        build the newest version only, print its binary
#
# Environment:
#   OPENSIPS_SRC_DIR  where the tarballs are (default ../shared/opensips-src)
#   OPENSIPS_CACHE    where builds go (default target/opensips); each version lands in
#                     $OPENSIPS_CACHE/<version>/{sbin/opensips,lib64/opensips/modules/},
#                     with include/ (its headers) and defs.txt (its -D flags) for the layout probe
#   OPENSIPS_JOBS     make -j value (default: number of cores)
#
# A version is rebuilt only when its tarball's SHA-256 or the module list changed (the
# stamp file .built records both). Only the modules the tests, the demo and the benchmark
# load are compiled, plus cachedb_redis when libhiredis-dev is installed.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
src_dir=${OPENSIPS_SRC_DIR:-$repo/../shared/opensips-src}
cache=${OPENSIPS_CACHE:-$repo/target/opensips}
jobs=${OPENSIPS_JOBS:-$(nproc)}

# Modules loaded by examples/, tests/ and bench/. Keep in sync with their configs.
# (proto_udp and proto_tcp are part of the core since 3.0: `loadmodule` finds them built in.)
modules=(sl tm signaling sipmsgops maxfwd rr usrloc registrar mi_fifo proto_ws auth auth_db
         db_text)
if [ -e /usr/include/hiredis/hiredis.h ]; then
    modules+=(cachedb_redis)
fi

list_only=0
newest_only=0
wanted=()
for arg in "$@"; do
    case "$arg" in
        --list) list_only=1 ;;
        --newest) newest_only=1 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) wanted+=("$arg") ;;
    esac
done

tarballs=()
if [ -d "$src_dir" ]; then
    for t in "$src_dir"/opensips-*.tar.gz; do
        [ -e "$t" ] || continue
        v=$(basename "$t" .tar.gz); v=${v#opensips-}
        if [ ${#wanted[@]} -gt 0 ] && [[ ! " ${wanted[*]} " == *" $v "* ]]; then continue; fi
        tarballs+=("$t")
    done
fi

if [ $newest_only = 1 ] && [ ${#tarballs[@]} -gt 0 ]; then
    newest=$(printf '%s\n' "${tarballs[@]}" | sort -V | tail -1)
    tarballs=("$newest")
fi

if [ $list_only = 1 ]; then
    for t in "${tarballs[@]}"; do
        v=$(basename "$t" .tar.gz); v=${v#opensips-}
        [ -x "$cache/$v/sbin/opensips" ] && echo "$v $cache/$v/sbin/opensips"
    done
    exit 0
fi

if [ ${#tarballs[@]} -eq 0 ]; then
    echo "build-opensips: no opensips-<version>.tar.gz in $src_dir (set OPENSIPS_SRC_DIR)" >&2
    exit 2
fi

for tool in bison flex make cc; do
    command -v "$tool" >/dev/null || { echo "build-opensips: '$tool' is missing (apt-get install bison flex build-essential)" >&2; exit 2; }
done

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

build_one() {
    local tarball=$1 v dest stamp want_stamp work start
    v=$(basename "$tarball" .tar.gz); v=${v#opensips-}
    dest=$cache/$v
    stamp="sha256=$(sha_of "$tarball") modules=${modules[*]}"
    if [ -f "$src_dir/SHA256SUMS" ]; then
        want_stamp=$(grep " opensips-$v.tar.gz\$" "$src_dir/SHA256SUMS" | cut -d' ' -f1 || true)
        if [ -n "$want_stamp" ] && [ "sha256=$want_stamp" != "${stamp%% *}" ]; then
            echo "build-opensips: $tarball does not match SHA256SUMS" >&2
            return 1
        fi
    fi
    if [ -x "$dest/sbin/opensips" ] && [ "$(cat "$dest/.built" 2>/dev/null)" = "$stamp" ]; then
        echo "build-opensips: $v already built from the same tarball ($dest)"
        return 0
    fi
    start=$(date +%s)
    echo "build-opensips: building $v (${#modules[@]} modules, make -j$jobs) into $dest"
    work=$cache/.src-$v
    rm -rf "$work" "$dest"
    mkdir -p "$work" "$dest/sbin" "$dest/lib64/opensips/modules" "$dest/include"
    tar -xzf "$tarball" -C "$work" --strip-components=1
    local mods=() m
    for m in "${modules[@]}"; do mods+=("modules/$m"); done
    # `modules=` on the command line replaces the Makefile's list of every module.
    if ! make -C "$work" -j"$jobs" app modules "modules=${mods[*]}" >"$dest/build.log" 2>&1; then
        tail -30 "$dest/build.log" >&2
        echo "build-opensips: $v failed; full log in $dest/build.log" >&2
        return 1
    fi
    # (Each step checked by hand: `set -e` does not apply inside a function called with ||.)
    install -m 0755 "$work/opensips" "$dest/sbin/opensips" || return 1
    for m in "${modules[@]}"; do
        install -m 0644 "$work/modules/$m/$m.so" "$dest/lib64/opensips/modules/$m.so" || return 1
    done
    # The layout test compiles a probe against this version's real headers with the same
    # -D flags its modules got: keep both (string-valued flags do not change layouts).
    (cd "$work" && find . -name '*.h' -print0 | tar --null -T - -cf -) | tar -xf - -C "$dest/include" \
        || return 1
    printf 'sso-print-defs:\n\t@echo $(DEFS)\n' | make -s -C "$work" -f Makefile -f - sso-print-defs \
        | tr ' ' '\n' | grep -E '^-D[A-Za-z0-9_]+(=[A-Za-z0-9_]+)?$' >"$dest/defs.txt" || return 1
    rm -rf "$work"
    echo "$stamp" >"$dest/.built"
    echo "build-opensips: $v built in $(( $(date +%s) - start )) s: $("$dest/sbin/opensips" -V | head -1)"
}

status=0
for t in "${tarballs[@]}"; do
    # Progress goes to stderr: stdout carries only what --newest prints.
    build_one "$t" >&2 || status=1
done
if [ $newest_only = 1 ] && [ $status = 0 ]; then
    v=$(basename "${tarballs[0]}" .tar.gz)
    echo "$cache/${v#opensips-}/sbin/opensips"
fi
exit $status
