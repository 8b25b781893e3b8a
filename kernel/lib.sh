# shellcheck shell=bash
# Helpers shared by kernel/*.sh (sourced, not run). Callers set LOG_TAG.

log() { printf '%s: %s\n' "${LOG_TAG:-kernel}" "$*" >&2; }
die() {
	printf '%s: ERROR: %s\n' "${LOG_TAG:-kernel}" "$*" >&2
	exit 1
}

APT_UPDATED=0
apt_update_once() {
	if [ "$APT_UPDATED" = 0 ]; then
		log "apt-get update"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || return 1
		APT_UPDATED=1
	fi
}

# Names of the given Debian packages that are not installed.
missing_pkgs() {
	local p
	for p in "$@"; do
		if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
			echo "$p"
		fi
	done
}

# Install the given Debian packages when any is missing; returns non-zero
# when that is impossible, and then PKG_FAILURE says which packages are
# missing and why they could not be installed.
PKG_FAILURE=
try_ensure_pkgs() {
	local missing=() still=()
	PKG_FAILURE=
	mapfile -t missing < <(missing_pkgs "$@")
	[ ${#missing[@]} -eq 0 ] && return 0
	if ! command -v apt-get >/dev/null; then
		PKG_FAILURE="missing Debian package(s): ${missing[*]} (no apt-get here, so they cannot be installed; this harness expects Debian 12)"
	elif [ "$(id -u)" != 0 ]; then
		PKG_FAILURE="missing Debian package(s): ${missing[*]} (not root, so they cannot be installed here; run: sudo apt-get install ${missing[*]})"
	elif ! apt_update_once; then
		PKG_FAILURE="missing Debian package(s): ${missing[*]} (apt-get update failed, so they cannot be installed; offline or no mirror?)"
	else
		log "installing: ${missing[*]}"
		if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
			mapfile -t still < <(missing_pkgs "${missing[@]}")
			PKG_FAILURE="missing Debian package(s): ${still[*]:-${missing[*]}} (apt-get install failed; see its messages above)"
		else
			return 0
		fi
	fi
	return 1
}

ensure_pkgs() { try_ensure_pkgs "$@" || die "$PKG_FAILURE"; }

# True when QEMU may use KVM here: a writable /dev/kvm backed by kvm_intel or
# kvm_amd, and not the nested kvm_pvm device (that one hangs ordinary kernels).
kvm_usable() {
	[ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; } &&
		[ ! -e /sys/module/kvm_pvm ]
}

# The kernel series the harness knows: 6.1 (bookworm's own) and 6.12
# (bookworm carries it too, as the linux-6.12 source package in
# bookworm-security; bookworm-backports has an older 6.12).
check_series() {
	case $1 in
	6.1 | 6.12) ;;
	*) die "--version must be 6.1 or 6.12, not '$1'" ;;
	esac
}

# "PACKAGE VERSION" of Debian's stock amd64 image for a series: the
# linux-image-<abi>-amd64 package the series' meta-package depends on
# (linux-image-amd64 for 6.1, linux-image-6.12-amd64 for 6.12) and its
# candidate version.  Empty output (and status 1) when apt names none.
stock_image_pkg() {
	local series=$1 meta re pkg ver
	case $series in
	6.1) meta=linux-image-amd64 re='^linux-image-6\.1\.[0-9]+-[0-9]+-amd64$' ;;
	6.12) meta=linux-image-6.12-amd64 re='^linux-image-6\.12\.[0-9]+\+deb[0-9]+-amd64$' ;;
	*) return 1 ;;
	esac
	if ! apt-cache show "$meta" >/dev/null 2>&1; then
		apt_update_once || log "apt-get update failed"
	fi
	pkg=$(apt-cache depends "$meta" 2>/dev/null |
		awk -v re="$re" '$1 == "Depends:" && $2 ~ re { print $2; exit }') || true
	[ -n "$pkg" ] || return 1
	ver=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null | awk '$1 == "Version:" { print $2; exit }')
	[ -n "$ver" ] || return 1
	echo "$pkg $ver"
}

# Download Debian packages (NAME=VERSION ...) into DIR with apt-get download
# (nothing is installed).
apt_download() {
	local dir=$1
	shift
	chmod 755 "$dir"
	chown _apt "$dir" 2>/dev/null || true
	(cd "$dir" && apt-get download -q "$@") >&2 ||
		{ apt_update_once && (cd "$dir" && apt-get download -q "$@") >&2; }
}
