#!/bin/sh
# Builds the Debian package: OUT/mailbridge_<version>_<arch>.deb (`make deb`; docs/packaging.md).
#
#   scripts/build-deb.sh [--build-dir DIR] [--out DIR] [--jobs N]
#
# It compiles in its own CMake tree (default build-deb) with Debian's hardening flags
# (dpkg-buildflags), installs into a staging tree with prefix /usr, adds what dist/ holds (the
# unit, the conffile, the maintainer scripts), the man pages and the docs, computes Depends
# with dpkg-shlibdeps, checks the shipped config with the binary it built, and packs the tree
# with dpkg-deb --root-owner-group (no fakeroot, no debhelper). The version comes from
# project(VERSION) in CMakeLists.txt; the package is native, so it has no Debian revision.
set -eu

usage() {
	echo "usage: scripts/build-deb.sh [--build-dir DIR] [--out DIR] [--jobs N]" >&2
	exit 64
}

cd "$(dirname "$0")/.."
SRC=$(pwd)
BUILD_DIR=build-deb
OUT=build
JOBS=${JOBS:-2}
CMAKE=${CMAKE:-cmake}
while [ $# -gt 0 ]; do
	[ $# -ge 2 ] || usage
	case "$1" in
	--build-dir) BUILD_DIR=$2 ;;
	--out) OUT=$2 ;;
	--jobs | -j) JOBS=$2 ;;
	*) usage ;;
	esac
	shift 2
done
mkdir -p "$BUILD_DIR" "$OUT"
BUILD_DIR=$(cd "$BUILD_DIR" && pwd)
OUT=$(cd "$OUT" && pwd)

die() {
	echo "build-deb: $*" >&2
	exit 1
}
for tool in dpkg dpkg-deb dpkg-buildflags "$CMAKE" gzip strip; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (apt-get install dpkg-dev cmake)"
done

VERSION=$(sed -n 's/^project(mailbridge VERSION \([0-9][0-9.]*\).*/\1/p' CMakeLists.txt)
[ -n "$VERSION" ] || die "no project(mailbridge VERSION x.y.z) in CMakeLists.txt"
ARCH=$(dpkg --print-architecture)
DEB="$OUT/mailbridge_${VERSION}_${ARCH}.deb"
MAINTAINER=${DEB_MAINTAINER:-"mailbridge maintainers <maintainers@users.noreply.r-seed-1b2eaba1.example>"}

# One timestamp for the changelog, the gzip headers and the archive members: the last
# commit's, so that the same tree gives the same package.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

# ---- compile, with the flags Debian builds its packages with ----
export DEB_BUILD_MAINT_OPTIONS="hardening=+all"
export DEB_LDFLAGS_MAINT_APPEND="-Wl,--as-needed"
CFLAGS="$(dpkg-buildflags --get CPPFLAGS) $(dpkg-buildflags --get CFLAGS)"
LDFLAGS=$(dpkg-buildflags --get LDFLAGS)
echo "build-deb: compiling in $BUILD_DIR"
"$CMAKE" -S "$SRC" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=None -DCMAKE_INSTALL_PREFIX=/usr \
	-DCMAKE_C_FLAGS="$CFLAGS" -DCMAKE_EXE_LINKER_FLAGS="$LDFLAGS" >/dev/null
"$CMAKE" --build "$BUILD_DIR" -j"$JOBS" --target mailbridge
BIN="$BUILD_DIR/mailbridge"

# ---- the staged tree ----
ROOT="$BUILD_DIR/pkgroot"
rm -rf "$ROOT"
DESTDIR="$ROOT" "$CMAKE" --install "$BUILD_DIR" --prefix /usr >/dev/null
[ -x "$ROOT/usr/sbin/mailbridge" ] || die "cmake --install did not put the binary in /usr/sbin"
# what dh_strip does, without the separate debug symbols package
strip --remove-section=.comment --remove-section=.note --strip-unneeded \
	"$ROOT/usr/sbin/mailbridge"

# The binary acts as sendmail when run under that name; these are the paths Debian's MTAs
# provide (PHP's default sendmail_path is /usr/sbin/sendmail -t -i).
ln -s mailbridge "$ROOT/usr/sbin/sendmail"
install -d "$ROOT/usr/lib"
ln -s ../sbin/mailbridge "$ROOT/usr/lib/sendmail"

install -D -m 0644 dist/mailbridge.service "$ROOT/lib/systemd/system/mailbridge.service"

"$BIN" config check -c dist/mailbridge.conf >/dev/null ||
	die "dist/mailbridge.conf does not pass mailbridge config check"
install -D -m 0644 dist/mailbridge.conf "$ROOT/etc/mailbridge/mailbridge.conf"

# Man pages. mailbridge.conf(5) comes from the binary itself (mailbridge config man), like
# the committed docs/mailbridge.conf.5 that the docs.man test keeps equal to it.
MAN="$ROOT/usr/share/man"
install -d "$MAN/man8" "$MAN/man5"
gzip -9n <docs/mailbridge.8 >"$MAN/man8/mailbridge.8.gz"
"$BIN" config man | gzip -9n >"$MAN/man5/mailbridge.conf.5.gz"
ln -s mailbridge.8.gz "$MAN/man8/sendmail.8.gz"

DOC="$ROOT/usr/share/doc/mailbridge"
install -d "$DOC/examples"
install -m 0644 dist/debian/copyright "$DOC/copyright"
install -m 0644 README.md docs/config.md docs/errors.md docs/sendmail.md docs/systemd.md \
	docs/packaging.md docs/api.md docs/ui.md docs/doctor.md docs/setup.md docs/backup.md "$DOC/"
install -m 0644 dist/mailbridge.service.d/low-ports.conf.example "$DOC/examples/low-ports.conf"
install -m 0644 dist/mailbridge.service.d/credentials.conf.example \
	"$DOC/examples/credentials.conf"
DATE=$(date -u -R -d "@$SOURCE_DATE_EPOCH")
{
	printf 'mailbridge (%s) unstable; urgency=medium\n\n' "$VERSION"
	printf '  * Built from the mailbridge tree by scripts/build-deb.sh.\n'
	if command -v git >/dev/null 2>&1 && git rev-parse --git-dir >/dev/null 2>&1; then
		git log -1 --format='  * Source: commit %h, "%s".' | fold -s -w 76 | sed '2,$s/^/    /'
	fi
	printf '\n -- %s  %s\n' "$MAINTAINER" "$DATE"
} | gzip -9n >"$DOC/changelog.gz"

install -D -m 0644 dist/debian/lintian-overrides "$ROOT/usr/share/lintian/overrides/mailbridge"

# ---- DEBIAN/ ----
install -d "$ROOT/DEBIAN"
install -m 0755 dist/debian/postinst dist/debian/prerm dist/debian/postrm "$ROOT/DEBIAN/"
install -m 0644 dist/debian/conffiles "$ROOT/DEBIAN/conffiles"
(
	cd "$ROOT"
	find . -type f ! -path './DEBIAN/*' ! -path './etc/*' | LC_ALL=C sort |
		sed 's|^\./||' | xargs md5sum >DEBIAN/md5sums
)

# Depends: dpkg-shlibdeps reads the libraries' symbols files for the lowest versions that
# have every symbol the binary uses. It wants a debian/control, so it gets a minimal one.
shlibs=""
if command -v dpkg-shlibdeps >/dev/null 2>&1; then
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	mkdir "$tmp/debian"
	printf 'Source: mailbridge\n\nPackage: mailbridge\nArchitecture: any\n' >"$tmp/debian/control"
	shlibs=$(cd "$tmp" && dpkg-shlibdeps -O -e"$ROOT/usr/sbin/mailbridge" |
		sed -n 's/^shlibs:Depends=//p')
else
	# Without dpkg-dev's tool: the package of each linked library, at the installed version.
	for lib in $(ldd "$ROOT/usr/sbin/mailbridge" | awk '$3 ~ /^\// {print $3}'); do
		real=$(readlink -f "$lib")
		pkg=$(dpkg -S "$lib" 2>/dev/null || dpkg -S "$real" 2>/dev/null || true)
		pkg=${pkg%%:*}
		[ -n "$pkg" ] || continue
		ver=$(dpkg-query -W -f='${Version}' "$pkg")
		shlibs="$shlibs${shlibs:+, }$pkg (>= $ver)"
	done
	shlibs=$(printf '%s' "$shlibs" | tr ',' '\n' | sed 's/^ //' | sort -u | paste -sd, - |
		sed 's/,/, /g')
fi
[ -n "$shlibs" ] || die "could not compute the shared library dependencies"

size=$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
cat >"$ROOT/DEBIAN/control" <<EOF
Package: mailbridge
Version: $VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $size
Depends: adduser, $shlibs
Provides: mail-transport-agent
Conflicts: mail-transport-agent
Replaces: mail-transport-agent
Section: mail
Priority: optional
Description: mail gateway that sends through Microsoft 365 with OAuth 2.0
 mailbridge takes mail from the programs of a server (PHP and WordPress,
 cron, scripts, printers, applications that only speak SMTP) over SMTP or a
 sendmail-compatible command, stores it durably, and delivers it through
 Microsoft 365 (Graph sendMail or SMTP with XOAUTH2) or another SMTP server.
 .
 It provides /usr/sbin/sendmail, like Debian's other mail transport agents,
 so PHP's mail() works unchanged. The daemon runs as a hardened systemd
 service, listening on loopback by default.
EOF

rm -f "$DEB"
dpkg-deb --root-owner-group -Zxz --build "$ROOT" "$DEB" >/dev/null
echo "build-deb: $DEB"
