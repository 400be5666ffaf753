#!/usr/bin/env bash
# Installs the Debian packages a target needs, when they are missing (as root, with apt-get);
# otherwise prints the command to run. One list for the Makefile, the demo and .ci/run.
#
#   tools/deps.sh build    compile the module and OpenSIPS from source
#   tools/deps.sh test     build + everything the end-to-end suites drive
set -euo pipefail

build=(make gcc libc6-dev bison flex pkg-config clang libclang-dev python3 ca-certificates)
# sipp for load cases, redis + hiredis for cachedb_redis, a real OAuth2 server, real phones.
test=(sip-tester openssl redis-server libhiredis-dev glewlwyd baresip-core linphone-cli sipsak)

case "${1:-build}" in
    build) want=("${build[@]}") ;;
    test) want=("${build[@]}" "${test[@]}") ;;
    *) echo "usage: $0 build|test" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "missing Debian packages: ${missing[*]}" >&2
    echo "install them with: sudo apt-get install ${missing[*]}" >&2
    # Without the build tools nothing runs; without the rest, suites skip loudly.
    for p in "${build[@]}"; do
        [[ " ${missing[*]} " == *" $p "* ]] && exit 1
    done
    exit 0
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# One by one after a failed batch, so a package the mirror lacks only skips what needs it
# (the suites say loudly what they skipped).
if ! apt-get install -y -qq "${missing[@]}" >/tmp/sso-deps-apt.log 2>&1; then
    for p in "${missing[@]}"; do
        apt-get install -y -qq "$p" >>/tmp/sso-deps-apt.log 2>&1 \
            || echo "deps: could not install $p (see /tmp/sso-deps-apt.log)" >&2
    done
fi
for p in "${build[@]}"; do
    if [[ " ${missing[*]} " == *" $p "* ]] && ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        echo "deps: build dependency $p is still missing" >&2
        exit 1
    fi
done
