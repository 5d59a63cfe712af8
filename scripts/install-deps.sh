#!/bin/sh
# Installs the Debian packages mailbridge needs to build and test, when any is missing.
# Run as root on a fresh Debian 12 (as `make run` and `make test` do); as another user it
# only says what is missing.
set -eu

BUILD_PKGS="build-essential cmake pkg-config libevent-dev libssl-dev libsqlite3-dev sqlite3
 libjansson-dev libinih-dev libgmime-3.0-dev libcurl4-openssl-dev libsystemd-dev"
TEST_PKGS="libcmocka-dev python3 swaks php-cli clang libclang-rt-14-dev openssl clang-format
 dpkg-dev lintian groff-base prometheus chromium"

want="$BUILD_PKGS"
[ "${1:-}" = "--test" ] && want="$BUILD_PKGS $TEST_PKGS"

# Node.js for the npm test peers: any recent one on the PATH will do, else Debian's.
if [ "${1:-}" = "--test" ] && ! command -v node >/dev/null 2>&1; then
	want="$want nodejs npm"
fi

missing=""
for p in $want; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "mailbridge: missing Debian packages:$missing" >&2
	echo "mailbridge: run as root, or: sudo apt-get install$missing" >&2
	exit 1
fi
echo "mailbridge: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
