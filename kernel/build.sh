#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Build (or fetch from the cache) the kernel images the guest tests boot.
#
#   kernel/build.sh [--version 6.1|6.12]
#                              the patched kernel (EFD_MASK): Debian's
#                              linux-source-V + the series' patches
#                              (6.1: patches/*.patch, 6.12: patches/6.12/*.patch)
#                              + `make tinyconfig` + config/efd-mask.config
#                              (+ config/efd-mask-V.config where it exists:
#                              options only that series has), `make bzImage`;
#                              cached by the sha256 of (patches, fragments,
#                              source package version,
#                              this script, gcc --version, ld --version).
#   kernel/build.sh --stock [--version 6.1|6.12]
#                              Debian's stock kernel image of the series (the
#                              linux-image-<abi>-amd64 package that
#                              linux-image-amd64, for 6.12
#                              linux-image-6.12-amd64, depends on), downloaded
#                              with apt-get download and unpacked with
#                              dpkg-deb -x (never installed), cached by
#                              package version.
#   kernel/build.sh --key [--version V]
#                              print the cache key of the patched build only
#                              (needs linux-source-V, gcc and ld installed:
#                              fails rather than print a key without them).
#
# The series defaults to 6.1.
#
# The LAST line of stdout is the image path; everything else goes to stderr.
# Missing Debian packages are installed with apt-get (root needed then).
#
# Environment:
#   USERPROTO_KERNEL_CACHE  cache directory (default /var/cache/userproto-kernel)
#   USERPROTO_KERNEL_JOBS   make -j (default: nproc)
#   USERPROTO_KERNEL_NICE   nice level of the compile (default 10)
#   USERPROTO_KERNEL_KEEP_WORK=1  keep the object tree (default: deleted)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LOG_TAG=build.sh
# shellcheck source=lib.sh
. "$HERE/lib.sh"
CACHE=${USERPROTO_KERNEL_CACHE:-/var/cache/userproto-kernel}
JOBS=${USERPROTO_KERNEL_JOBS:-$(nproc)}
NICE=${USERPROTO_KERNEL_NICE:-10}
FRAGMENT=$HERE/config/efd-mask.config
SELF=$HERE/build.sh

MODE=patched
SERIES=6.1
while [ $# -gt 0 ]; do
	case $1 in
	--stock) MODE=stock; shift ;;
	--key) MODE=key; shift ;;
	--version) SERIES=${2:?--version needs 6.1 or 6.12}; shift 2 ;;
	-h | --help) sed -n '3,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//; /^set -euo/d'; exit 0 ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
done
check_series "$SERIES"
SRC_PKG=linux-source-$SERIES
SRC_TAR=/usr/src/linux-source-$SERIES.tar.xz
# 6.1's patches stay where they always were; other series have a directory.
PATCH_DIR=$HERE/patches
[ "$SERIES" = 6.1 ] || PATCH_DIR=$HERE/patches/$SERIES

# The common fragment, then the series' own (options older series lack).
FRAGMENTS=("$FRAGMENT")
[ -f "$HERE/config/efd-mask-$SERIES.config" ] && FRAGMENTS+=("$HERE/config/efd-mask-$SERIES.config")

PATCHES=()
if [ -d "$PATCH_DIR" ]; then
	mapfile -t PATCHES < <(find "$PATCH_DIR" -maxdepth 1 -name '*.patch' | LC_ALL=C sort)
fi

# The installed version of the source package; empty when not installed.
src_version() {
	dpkg-query -W -f='${Status} ${Version}' "$SRC_PKG" 2>/dev/null |
		awk '$1 == "install" && $3 == "installed" { print $4 }'
}

# Everything that decides what the image is, one line each.  This script is
# hashed whole (so any edit of the recipe rebuilds), and so are the versions
# of the compiler and linker (a toolchain upgrade rebuilds).  Fails instead
# of printing a key that lacks one of them.
cache_inputs() {
	local p ver cc ld
	ver=$(src_version)
	[ -n "$ver" ] || die "$SRC_PKG is not installed, so the cache key (which includes its version) is unknown; run kernel/build.sh once, or apt-get install $SRC_PKG"
	command -v gcc >/dev/null || die "gcc is not installed, so the cache key (which includes gcc --version) is unknown; apt-get install build-essential"
	command -v ld >/dev/null || die "ld is not installed, so the cache key (which includes ld --version) is unknown; apt-get install binutils"
	cc=$(gcc --version | head -1)
	ld=$(ld --version | head -1)
	echo "source $SRC_PKG $ver"
	echo "build.sh $(sha256sum <"$SELF" | cut -d' ' -f1)"
	echo "gcc $cc"
	echo "ld $ld"
	for p in "${PATCHES[@]}"; do
		echo "patch $(basename "$p") $(sha256sum <"$p" | cut -d' ' -f1)"
	done
	local f
	for f in "${FRAGMENTS[@]}"; do
		echo "fragment $(basename "$f") $(sha256sum <"$f" | cut -d' ' -f1)"
	done
}

cache_key() {
	local inputs
	inputs=$(cache_inputs) || exit 1
	printf '%s\n' "$inputs" | sha256sum | cut -c1-20
}

# Check that every option the fragment sets is really so in .config.
verify_config() {
	local cfg=$1 bad=0 line opt
	while IFS= read -r line; do
		case $line in
		CONFIG_*=y)
			opt=${line%%=*}
			if ! grep -qx "$opt=y" "$cfg"; then
				log "config: $opt requested =y but is: $(grep -E "^(# )?${opt}[= ]" "$cfg" || echo 'absent (dependency not met)')"
				bad=1
			fi
			;;
		"# CONFIG_"*" is not set")
			opt=${line#\# }
			opt=${opt%% *}
			if grep -qE "^$opt=[ym]" "$cfg"; then
				log "config: $opt requested off but is on"
				bad=1
			fi
			;;
		esac
	done < <(cat "${FRAGMENTS[@]}")
	[ "$bad" = 0 ] || die "the kernel config does not have what $(for f in "${FRAGMENTS[@]}"; do printf 'config/%s ' "$(basename "$f")"; done)asks for"
}

build_patched() {
	ensure_pkgs "$SRC_PKG" build-essential flex bison bc libelf-dev libssl-dev cpio dwarves xz-utils kmod
	[ -f "$SRC_TAR" ] || die "$SRC_TAR not found after installing $SRC_PKG"
	mkdir -p "$CACHE/patched"
	local key out
	key=$(cache_key)
	out=$CACHE/patched/$key
	if [ -s "$out/bzImage" ]; then
		log "cache hit: $out/bzImage ($SRC_PKG $(src_version))"
		echo "$out/bzImage"
		return 0
	fi

	# One build at a time per cache directory.
	exec 9>"$CACHE/.build.lock"
	flock 9
	if [ -s "$out/bzImage" ]; then
		log "cache hit after waiting for another build: $out/bzImage"
		echo "$out/bzImage"
		return 0
	fi

	local work=$CACHE/work-$key t0 t1
	t0=$(date +%s)
	rm -rf "$work"
	mkdir -p "$work"
	if [ "${USERPROTO_KERNEL_KEEP_WORK:-0}" != 1 ]; then
		# shellcheck disable=SC2064 # expand $work now
		trap "rm -rf '$work'" EXIT
	fi
	log "extracting $SRC_TAR ($SRC_PKG $(src_version)) into $work"
	tar -xf "$SRC_TAR" -C "$work"
	local src=$work/linux-source-$SERIES p
	[ -d "$src" ] || die "unexpected layout of $SRC_TAR"
	[ ${#PATCHES[@]} -gt 0 ] || die "no patches in $PATCH_DIR"
	for p in "${PATCHES[@]}"; do
		log "applying $(basename "$p")"
		(cd "$src" && patch -p1 --batch --forward --quiet <"$p") >&2 || die "patch $(basename "$p") does not apply"
	done
	log "configuring: tinyconfig + $(for f in "${FRAGMENTS[@]}"; do printf '%s ' "$(basename "$f")"; done)"
	(
		cd "$src"
		make -s tinyconfig
		scripts/kconfig/merge_config.sh -m -O . .config "${FRAGMENTS[@]}"
		make -s olddefconfig
	) >"$work/config.log" 2>&1 || { tail -30 "$work/config.log" >&2; die "kernel configuration failed"; }
	verify_config "$src/.config"
	log "make -j$JOBS bzImage (nice $NICE; log: $work/build.log)"
	if ! (cd "$src" && KBUILD_BUILD_USER=userproto KBUILD_BUILD_HOST=userproto \
		nice -n "$NICE" make -j"$JOBS" bzImage) >"$work/build.log" 2>&1; then
		tail -40 "$work/build.log" >&2
		die "kernel build failed"
	fi
	if grep -E '(^|[^-])warning:' "$work/build.log" | grep -F 'eventfd' >&2; then
		die "the patched eventfd code compiles with warnings"
	fi
	t1=$(date +%s)
	rm -rf "$out.tmp"
	mkdir -p "$out.tmp"
	cp "$src/arch/x86/boot/bzImage" "$out.tmp/bzImage"
	cp "$src/.config" "$out.tmp/config"
	cp "${FRAGMENTS[@]}" "$out.tmp/"
	for p in "${PATCHES[@]}"; do cp "$p" "$out.tmp/"; done
	cp "$work/build.log" "$out.tmp/build.log"
	{
		echo "key: $key"
		echo "built: $(date -u +%FT%TZ) in $((t1 - t0)) s"
		echo "key inputs:"
		cache_inputs | sed 's/^/  /'
	} >"$out.tmp/BUILDINFO"
	mv "$out.tmp" "$out"
	# Keep the three most recent patched images.
	find "$CACHE/patched" -mindepth 1 -maxdepth 1 -type d -printf '%T@ %p\n' | sort -rn | tail -n +4 |
		cut -d' ' -f2- | while IFS= read -r old; do rm -rf "$old"; done
	log "built in $((t1 - t0)) s: $out/bzImage ($(stat -c %s "$out/bzImage") bytes)"
	if [ "${USERPROTO_KERNEL_KEEP_WORK:-0}" != 1 ]; then
		rm -rf "$work"
		trap - EXIT
	else
		log "object tree kept: $src"
	fi
	echo "$out/bzImage"
}

newest_cached_stock() {
	local f
	f=$(find "$CACHE/stock" -mindepth 2 -maxdepth 2 -path "*/linux-image-$SERIES.*/vmlinuz" -printf '%T@ %p\n' 2>/dev/null |
		sort -rn | head -1 | cut -d' ' -f2-)
	[ -n "$f" ] && echo "$f"
}

fetch_stock() {
	mkdir -p "$CACHE/stock"
	local pkg= ver= dir cached
	# The same package kernel/module/build.sh builds the module for.
	read -r pkg ver < <(stock_image_pkg "$SERIES") || true
	if [ -z "$pkg" ] || [ -z "$ver" ]; then
		if cached=$(newest_cached_stock); then
			log "apt does not name a linux-image-$SERIES package; using the cached $cached"
			echo "$cached"
			return 0
		fi
		die "cannot find Debian's stock linux-image-$SERIES.*-amd64 package (is apt configured for bookworm and bookworm-security?)"
	fi
	dir=$CACHE/stock/${pkg}_$ver
	if [ -s "$dir/vmlinuz" ]; then
		log "cache hit: $dir/vmlinuz ($pkg $ver)"
		echo "$dir/vmlinuz"
		return 0
	fi
	exec 9>"$CACHE/.stock.lock"
	flock 9
	if [ -s "$dir/vmlinuz" ]; then
		echo "$dir/vmlinuz"
		return 0
	fi
	local tmp t0
	t0=$(date +%s)
	tmp=$(mktemp -d "$CACHE/stock/download.XXXXXX")
	# shellcheck disable=SC2064
	trap "rm -rf '$tmp'" EXIT
	log "apt-get download $pkg=$ver"
	# _apt must be able to write the download directory.
	chmod 755 "$tmp"
	chown _apt "$tmp" 2>/dev/null || true
	(cd "$tmp" && apt-get download -q "$pkg=$ver") >&2 ||
		{ apt_update_once && (cd "$tmp" && apt-get download -q "$pkg=$ver") >&2; } ||
		die "apt-get download $pkg=$ver failed"
	dpkg-deb -x "$tmp"/*.deb "$tmp/x"
	local img
	img=$(find "$tmp/x/boot" -maxdepth 1 -name 'vmlinuz-*' | head -1)
	[ -n "$img" ] || die "$pkg has no /boot/vmlinuz-*"
	rm -rf "$dir.tmp"
	mkdir -p "$dir.tmp"
	cp "$img" "$dir.tmp/vmlinuz"
	cp "$tmp"/x/boot/config-* "$dir.tmp/config" 2>/dev/null || true
	echo "$pkg $ver $(basename "$img")" >"$dir.tmp/BUILDINFO"
	mv "$dir.tmp" "$dir"
	rm -rf "$tmp"
	trap - EXIT
	log "stock kernel $pkg $ver unpacked in $(($(date +%s) - t0)) s"
	echo "$dir/vmlinuz"
}

case $MODE in
patched) build_patched ;;
stock) fetch_stock ;;
key) cache_key ;;
esac
