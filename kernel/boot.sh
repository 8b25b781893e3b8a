#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Boot a kernel image under QEMU with a throw-away initramfs and judge the run.
#
# usage: kernel/boot.sh IMAGE INIT_PROGRAM [options] [-- KERNEL-CMDLINE-WORDS...]
#
#   IMAGE               bzImage / vmlinuz to boot
#   INIT_PROGRAM        static program that becomes /init (kernel/guest/init.c)
#   --add SRC:DEST      put file or directory SRC at DEST in the initramfs
#                       (parent directories are created; symlinks followed)
#   --add-elf SRC[:DEST]
#                       put the ELF program SRC at DEST (default: the same
#                       path) plus every shared library `ldd SRC` resolves,
#                       each at the path ldd prints (dynamic loader included)
#   --test 'CMDLINE'    append a line to /guest-tests.txt (init runs each
#                       line; see kernel/guest/init.c for the syntax)
#   --tests-file FILE   append the lines of FILE to /guest-tests.txt
#   --timeout SECS      hard limit for the whole QEMU run (default 120)
#   --mem MB            guest memory (default 512)
#   --smp N             guest CPUs (default 2; under TCG with more than one
#                       CPU QEMU runs them in parallel: -accel tcg,thread=multi)
#   --log FILE          where the serial log goes (default: a new temp file)
#   --accel auto|tcg|kvm  (default: $USERPROTO_QEMU_ACCEL or auto: KVM only
#                       where kvm_usable in lib.sh says so, else TCG)
#   --keep-initrd FILE  keep the generated initramfs as FILE
#   -- WORDS...         appended to the kernel command line
#
# The kernel command line is
#   console=ttyS0 panic=-1 oops=panic panic_on_warn=1 softlockup_panic=1
#   hung_task_panic=1 quiet loglevel=5 WORDS...
# so any oops, BUG, WARN, soft lockup or hung task ends the run at once
# (QEMU -no-reboot exits). At the timeout a SysRq task dump goes to the log
# first (see below), then QEMU is killed.
#
# Verdict (last line on stderr: "boot.sh: PASS ..." or "boot.sh: FAIL: ..."),
# exit status 0 only when all hold:
#   - QEMU exited by itself before the timeout (status 0);
#   - the log has no kernel failure: "Kernel panic", "kernel BUG at",
#     "Call Trace:", "general protection fault" anywhere, or a line starting
#     (after an optional printk timestamp) with "Oops", "BUG: " or "WARNING:";
#   - the guest printed exactly one "USERPROTO-GUEST-RESULT: ..." line and it
#     is "USERPROTO-GUEST-RESULT: PASS".
# Exit status: 0 pass, 1 guest or kernel failure, 2 usage, 3 timeout.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LOG_TAG=boot.sh
# shellcheck source=lib.sh
. "$HERE/lib.sh"

usage() {
	sed -n '3,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//; /^set -euo/d' >&2
	exit 2
}

[ $# -ge 2 ] || usage
IMAGE=$1
INIT=$2
shift 2
TIMEOUT=120
MEM=512
SMP=2
LOGFILE=
ACCEL=${USERPROTO_QEMU_ACCEL:-auto}
KEEP_INITRD=
ADDS=()
ELFS=()
TESTS=()
TESTFILES=()
EXTRA_CMDLINE=()
while [ $# -gt 0 ]; do
	case $1 in
	--add) ADDS+=("${2:?--add needs SRC:DEST}"); shift 2 ;;
	--add-elf) ELFS+=("${2:?--add-elf needs SRC[:DEST]}"); shift 2 ;;
	--test) TESTS+=("${2?--test needs a command line}"); shift 2 ;;
	--tests-file) TESTFILES+=("${2:?--tests-file needs FILE}"); shift 2 ;;
	--timeout) TIMEOUT=${2:?}; shift 2 ;;
	--mem) MEM=${2:?}; shift 2 ;;
	--smp) SMP=${2:?}; shift 2 ;;
	--log) LOGFILE=${2:?}; shift 2 ;;
	--accel) ACCEL=${2:?}; shift 2 ;;
	--keep-initrd) KEEP_INITRD=${2:?}; shift 2 ;;
	--) shift; EXTRA_CMDLINE=("$@"); break ;;
	-h | --help) usage ;;
	*) log "unknown argument: $1"; usage ;;
	esac
done
[ -f "$IMAGE" ] || die "no kernel image at $IMAGE"
[ -f "$INIT" ] || die "no init program at $INIT"
case $TIMEOUT$MEM$SMP in *[!0-9]*) die "--timeout, --mem and --smp take numbers" ;; esac

ensure_pkgs qemu-system-x86 cpio gzip coreutils bc
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found after installing qemu-system-x86"

case $ACCEL in
auto) if kvm_usable; then ACCEL=kvm; else ACCEL=tcg; fi ;;
tcg | kvm) ;;
*) die "--accel must be auto, tcg or kvm" ;;
esac

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/userproto-initrd.XXXXXX")
INITRD=$STAGE.cpio.gz
cleanup() { rm -rf "$STAGE" "$INITRD"; }
trap cleanup EXIT

# Copy SRC (file or directory) to DEST inside the initramfs.
stage_add() {
	local src=$1 dest=$2
	[ -e "$src" ] || die "no such file to add: $src"
	case $dest in /*) ;; *) die "destination must be absolute: $dest" ;; esac
	mkdir -p "$STAGE$(dirname "$dest")"
	if [ -d "$src" ]; then
		mkdir -p "$STAGE$dest"
		cp -rL "$src/." "$STAGE$dest/"
	else
		cp -L "$src" "$STAGE$dest"
	fi
}

# An ELF program plus the shared libraries ldd resolves for it.
stage_add_elf() {
	local spec=$1 src dest out line lib
	src=${spec%%:*}
	dest=${spec#*:}
	[ "$dest" = "$spec" ] && dest=$src
	[ -f "$src" ] || die "no such program: $src"
	case $src in /*) ;; *) src=$(cd "$(dirname "$src")" && pwd)/$(basename "$src") ;; esac
	case $dest in /*) ;; *) dest=/$dest ;; esac
	stage_add "$src" "$dest"
	chmod 755 "$STAGE$dest"
	if ! out=$(ldd "$src" 2>&1); then
		case $out in
		*"not a dynamic executable"* | *"statically linked"*) return 0 ;;
		*) die "ldd $src failed: $out" ;;
		esac
	fi
	while IFS= read -r line; do
		case $line in
		*"not found"*) die "ldd $src: $line" ;;
		*"=> /"*) lib=${line#*=> }; lib=${lib%% (*} ;;
		*/*" ("*) lib=${line#"${line%%[![:space:]]*}"}; lib=${lib%% (*} ;;
		*) continue ;;
		esac
		[ -e "$STAGE$lib" ] || stage_add "$lib" "$lib"
	done <<<"$out"
}

mkdir -p "$STAGE"/{proc,sys,dev,tmp,root,etc,bin}
# mktemp -d made the root 0700; as / it must be 0755, or no user but root
# could reach anything (the module guest opens /dev/efd_mask as nobody).
chmod 755 "$STAGE"
cp -L "$INIT" "$STAGE/init"
chmod 755 "$STAGE/init"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$STAGE/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$STAGE/etc/group"
for a in ${ADDS[@]+"${ADDS[@]}"}; do
	case $a in *:*) ;; *) die "--add needs SRC:DEST, got $a" ;; esac
	stage_add "${a%%:*}" "${a#*:}"
done
for e in ${ELFS[@]+"${ELFS[@]}"}; do stage_add_elf "$e"; done
: >"$STAGE/guest-tests.txt"
for f in ${TESTFILES[@]+"${TESTFILES[@]}"}; do
	[ -f "$f" ] || die "no tests file $f"
	cat "$f" >>"$STAGE/guest-tests.txt"
	echo >>"$STAGE/guest-tests.txt"
done
for t in ${TESTS[@]+"${TESTS[@]}"}; do printf '%s\n' "$t" >>"$STAGE/guest-tests.txt"; done

(cd "$STAGE" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) | gzip -1 >"$INITRD"
[ -n "$KEEP_INITRD" ] && cp "$INITRD" "$KEEP_INITRD"

if [ -z "$LOGFILE" ]; then
	LOGFILE=$(mktemp "${TMPDIR:-/tmp}/userproto-boot.XXXXXX.log")
fi
mkdir -p "$(dirname "$LOGFILE")"

APPEND="console=ttyS0 panic=-1 oops=panic panic_on_warn=1 softlockup_panic=1 hung_task_panic=1 quiet loglevel=5"
[ ${#EXTRA_CMDLINE[@]} -gt 0 ] && APPEND="$APPEND ${EXTRA_CMDLINE[*]}"
ACCEL_ARG=$ACCEL
# One host thread per vCPU, so the guest's CPUs really run concurrently.
[ "$ACCEL" = tcg ] && [ "$SMP" -gt 1 ] && ACCEL_ARG=tcg,thread=multi
QEMU=(qemu-system-x86_64 -accel "$ACCEL_ARG" -m "$MEM" -smp "$SMP" -nographic -no-reboot -nic none
	-kernel "$IMAGE" -initrd "$INITRD" -append "$APPEND")
[ "$ACCEL" = kvm ] && QEMU+=(-cpu host)

log "booting $IMAGE ($ACCEL_ARG, ${MEM} MB, $SMP CPU(s), initramfs $(stat -c %s "$INITRD") bytes, timeout ${TIMEOUT}s)"
log "serial log: $LOGFILE"
# QEMU's stdin is a FIFO held open here (never EOF): with -nographic the
# serial line and QEMU's monitor share stdio, so at the timeout the watcher
# below can send a serial break ("Ctrl-a b") followed by a SysRq key. It
# raises the console log level, dumps every task's state and stack ("t")
# and the active CPUs' backtraces ("l"), and gives QEMU 20 s to print them
# before `timeout` kills it. A stall then says where the guest was.
SYSRQ_GRACE=20
FIFO=$(mktemp -u "${TMPDIR:-/tmp}/userproto-qemu-stdin.XXXXXX")
mkfifo -m 600 "$FIFO"
exec 9<>"$FIFO"
rm -f "$FIFO"
sysrq() { printf '\001b' >&9; sleep 1; printf '%s' "$1" >&9; sleep 2; }
(
	exec </dev/null >/dev/null 2>&1
	# One-second steps, so killing this subshell leaves no long sleep behind.
	for ((i = 0; i < TIMEOUT; i++)); do sleep 1; done
	sysrq 8
	sysrq t
	sysrq l
) &
WATCHER=$!
T0=$(date +%s.%N)
set +e
# sed -u, not tr: tr block-buffers into the pipe, so a live view of the log
# (and the log file of a run that is killed) lagged by up to 4 KiB. That lag
# made a slow guest look stuck at an earlier test (evidence/stall-*).
timeout -k 10 "$((TIMEOUT + SYSRQ_GRACE))" "${QEMU[@]}" <&9 2>&1 |
	sed -u -e 's/\r//g' -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1bc//g' | tee "$LOGFILE"
STATUS=("${PIPESTATUS[@]}")
set -e
kill "$WATCHER" 2>/dev/null || true
wait "$WATCHER" 2>/dev/null || true
exec 9>&-
QRC=${STATUS[0]}
ELAPSED=$(echo "$(date +%s.%N) - $T0" | bc)
ELAPSED=$(printf '%.1f' "$ELAPSED")

fail() {
	printf 'boot.sh: FAIL: %s (%s s, log: %s)\n' "$1" "$ELAPSED" "$LOGFILE" >&2
	exit "${2:-1}"
}

if [ "$QRC" = 124 ] || [ "$QRC" = 137 ]; then
	fail "timeout: QEMU still running after ${TIMEOUT} s (the log ends with a SysRq task dump)" 3
fi
KPAT='Kernel panic|kernel BUG at|Call Trace:|general protection fault|^(\[ *[0-9]+\.[0-9]+\] )?(Oops|BUG: |WARNING:)'
if grep -En "$KPAT" "$LOGFILE" >/dev/null; then
	fail "kernel failure in the log: $(grep -Enm1 "$KPAT" "$LOGFILE")"
fi
mapfile -t RESULTS < <(grep -E '^USERPROTO-GUEST-RESULT:' "$LOGFILE" || true)
if [ ${#RESULTS[@]} -eq 0 ]; then
	fail "the guest printed no USERPROTO-GUEST-RESULT line"
elif [ ${#RESULTS[@]} -gt 1 ]; then
	fail "the guest printed ${#RESULTS[@]} USERPROTO-GUEST-RESULT lines"
elif [ "${RESULTS[0]}" != "USERPROTO-GUEST-RESULT: PASS" ]; then
	fail "guest: ${RESULTS[0]#USERPROTO-GUEST-RESULT: }"
fi
[ "$QRC" = 0 ] || fail "QEMU exited with status $QRC"
printf 'boot.sh: PASS: %s booted and passed in %s s (%s, log: %s)\n' "$IMAGE" "$ELAPSED" "$ACCEL" "$LOGFILE" >&2
