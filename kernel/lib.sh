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
# (after logging why) when that is impossible.
try_ensure_pkgs() {
	local missing=()
	mapfile -t missing < <(missing_pkgs "$@")
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" != 0 ]; then
		log "missing packages (${missing[*]}) and not root to install them"
		return 1
	fi
	apt_update_once || {
		log "apt-get update failed"
		return 1
	}
	log "installing: ${missing[*]}"
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
		log "apt-get install ${missing[*]} failed"
		return 1
	fi
}

ensure_pkgs() { try_ensure_pkgs "$@" || die "cannot install: $*"; }

# True when QEMU may use KVM here: a writable /dev/kvm backed by kvm_intel or
# kvm_amd, and not the nested kvm_pvm device (that one hangs ordinary kernels).
kvm_usable() {
	[ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; } &&
		[ ! -e /sys/module/kvm_pvm ]
}
