#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR/..
# Build efd_mask.ko for Debian's stock kernel of a series (cached).
#
#   kernel/module/build.sh --version 6.1|6.12   build (or take from the cache)
#                              the module for the stock image that
#                              `kernel/build.sh --stock --version V` fetches;
#                              the LAST stdout line is the .ko path
#   kernel/module/build.sh --version V --key     print the cache key only
#
# The headers are Debian's linux-headers-<abi>-amd64 of exactly that image's
# package and version, with its -common and linux-kbuild packages.  They are
# fetched with apt-get download and unpacked with dpkg-deb -x into the cache
# (never installed: 6.12's headers package depends on the image package,
# which would install a kernel into /boot and /lib/modules).  The module is
# built with plain kbuild, `make -C <headers> M=<dir> modules` (the Makefile's
# first form, the one DKMS uses), its vermagic is checked against the image's
# release, and the debug info is stripped.
#
# Cache key: sha256 of the module sources (efd_mask.c, Makefile), this
# script, the headers package and version, and `gcc --version`.
#
# Environment: USERPROTO_KERNEL_CACHE (default /var/cache/userproto-kernel).
set -euo pipefail

MOD=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HERE=$(dirname "$MOD")
LOG_TAG=module/build.sh
# shellcheck source=../lib.sh
. "$HERE/lib.sh"
CACHE=${USERPROTO_KERNEL_CACHE:-/var/cache/userproto-kernel}
SERIES=
KEY_ONLY=0
while [ $# -gt 0 ]; do
	case $1 in
	--version) SERIES=${2:?--version needs 6.1 or 6.12}; shift 2 ;;
	--key) KEY_ONLY=1; shift ;;
	-h | --help) sed -n '3,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//; /^set -euo/d'; exit 0 ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
done
[ -n "$SERIES" ] || die "--version 6.1|6.12 is required"
check_series "$SERIES"
ensure_pkgs build-essential kmod

read -r IMG_PKG IMG_VER < <(stock_image_pkg "$SERIES") ||
	die "apt names no stock linux-image package for $SERIES (is apt configured for bookworm and bookworm-security?)"
ABI=${IMG_PKG#linux-image-}
HDR_PKG=linux-headers-$ABI
# The headers package's own dependencies name the -common and kbuild packages.
DEPS=$(apt-cache show "$HDR_PKG=$IMG_VER" 2>/dev/null | awk -F': ' '$1 == "Depends" { print $2; exit }')
[ -n "$DEPS" ] || die "apt knows no $HDR_PKG=$IMG_VER (the headers of the stock image $IMG_PKG $IMG_VER)"
COMMON_PKG=$(tr ',|' '\n\n' <<<"$DEPS" | awk '$1 ~ /^linux-headers-.*-common$/ { print $1; exit }')
KBUILD_PKG=$(tr ',|' '\n\n' <<<"$DEPS" | awk '$1 ~ /^linux-kbuild-/ { print $1; exit }')
[ -n "$COMMON_PKG" ] && [ -n "$KBUILD_PKG" ] || die "cannot find the -common and kbuild packages in $HDR_PKG's dependencies: $DEPS"

cache_inputs() {
	echo "headers $HDR_PKG $IMG_VER"
	echo "gcc $(gcc --version | head -1)"
	echo "build.sh $(sha256sum <"$MOD/build.sh" | cut -d' ' -f1)"
	echo "efd_mask.c $(sha256sum <"$MOD/efd_mask.c" | cut -d' ' -f1)"
	echo "Makefile $(sha256sum <"$MOD/Makefile" | cut -d' ' -f1)"
}
KEY=$(cache_inputs | sha256sum | cut -c1-20)
if [ "$KEY_ONLY" = 1 ]; then
	echo "$KEY"
	exit 0
fi
OUT=$CACHE/module/$SERIES/$KEY
if [ -s "$OUT/efd_mask.ko" ]; then
	log "cache hit: $OUT/efd_mask.ko ($HDR_PKG $IMG_VER)"
	echo "$OUT/efd_mask.ko"
	exit 0
fi
mkdir -p "$CACHE/module" "$CACHE/headers"
exec 9>"$CACHE/.module.lock"
flock 9

# The headers, unpacked once per package version.
HROOT=$CACHE/headers/${HDR_PKG}_$IMG_VER
KDIR=$HROOT/usr/src/$HDR_PKG
if [ ! -f "$HROOT/.complete" ]; then
	t0=$(date +%s)
	rm -rf "$HROOT" "$HROOT.tmp"
	mkdir -p "$HROOT.tmp/debs"
	log "apt-get download $HDR_PKG $COMMON_PKG $KBUILD_PKG (=$IMG_VER)"
	apt_download "$HROOT.tmp/debs" "$HDR_PKG=$IMG_VER" "$COMMON_PKG=$IMG_VER" "$KBUILD_PKG=$IMG_VER" ||
		die "apt-get download of the $ABI headers failed"
	for d in "$HROOT.tmp"/debs/*.deb; do dpkg-deb -x "$d" "$HROOT.tmp"; done
	rm -rf "$HROOT.tmp/debs"
	# The arch Makefile includes the -common one by its absolute path.
	mk=$HROOT.tmp/usr/src/$HDR_PKG/Makefile
	[ -f "$mk" ] || die "$HDR_PKG has no usr/src/$HDR_PKG/Makefile"
	sed -i "s#^include /usr/src/#include $HROOT/usr/src/#" "$mk"
	grep -q "^include $HROOT/usr/src/$COMMON_PKG/Makefile" "$mk" ||
		die "unexpected $HDR_PKG Makefile: $(cat "$mk")"
	touch "$HROOT.tmp/.complete"
	mv "$HROOT.tmp" "$HROOT"
	log "headers unpacked in $(($(date +%s) - t0)) s: $KDIR"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/efd_mask-build.XXXXXX")
# shellcheck disable=SC2064 # expand $work now
trap "rm -rf '$work'" EXIT
cp "$MOD/efd_mask.c" "$MOD/Makefile" "$work/"
log "make -C $KDIR M=$work modules"
t0=$(date +%s.%N)
if ! make -C "$KDIR" M="$work" modules >"$work/build.log" 2>&1; then
	cat "$work/build.log" >&2
	die "building efd_mask.ko for $ABI failed"
fi
if grep -E '(^|[^-])warning:' "$work/build.log" >&2; then
	die "efd_mask.c compiles with warnings for $ABI"
fi
t1=$(date +%s.%N)
vermagic=$(modinfo -F vermagic "$work/efd_mask.ko")
case $vermagic in
"$ABI "*) ;;
*) die "efd_mask.ko has vermagic '$vermagic', not the stock image's release $ABI" ;;
esac
strip --strip-debug "$work/efd_mask.ko"
rm -rf "$OUT.tmp"
mkdir -p "$OUT.tmp"
cp "$work/efd_mask.ko" "$work/build.log" "$OUT.tmp/"
{
	echo "key: $KEY"
	echo "built: $(date -u +%FT%TZ) in $(printf '%.1f' "$(echo "$t1 - $t0" | bc)") s"
	echo "for: $IMG_PKG $IMG_VER (vermagic: $vermagic)"
	echo "key inputs:"
	cache_inputs | sed 's/^/  /'
} >"$OUT.tmp/BUILDINFO"
mv "$OUT.tmp" "$OUT"
# Keep the three most recent builds per series.
find "$CACHE/module/$SERIES" -mindepth 1 -maxdepth 1 -type d -printf '%T@ %p\n' | sort -rn | tail -n +4 |
	cut -d' ' -f2- | while IFS= read -r old; do rm -rf "$old"; done
log "built efd_mask.ko for $ABI ($IMG_VER) in $(printf '%.1f' "$(echo "$t1 - $t0" | bc)") s: $OUT/efd_mask.ko ($(stat -c %s "$OUT/efd_mask.ko") bytes)"
echo "$OUT/efd_mask.ko"
