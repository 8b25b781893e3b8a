#!/usr/bin/env bash
# Faults in network namespaces (issue 14, item 3; docs/reliability.md, "Faults").
#
# Usage (as root): scripts/faults.sh [SCENARIO...]      default: every scenario
#   scenarios: link profiles x transports   loss1 loss10 delay reorder dup  (each over
#              push/pull, pub/sub, req/rep on SP/TCP, and UDP); clean (the baseline)
#              kill-sender kill-receiver stall halfopen halfopen-nokeepalive emfile
#   FAULTS_LINK=auto|netem|tun   how faults are made (auto: tc netem if the kernel has
#                                sch_netem, else scripts/faults-link.c on two TUN devices)
#   USERPROTO_NETFAULT=PATH      the userproto-netfault binary (default: built here with
#                                swift build --product userproto-netfault)
#   FAULTS_OUT=DIR               where each run's JSON lines and the table go
#                                (default .build/faults)
#   FAULTS_CPU_PERCENT=N         the CPU bound while waiting, % of one core (default 5)
#   FAULTS_KEEP=1                keep the scratch directory (every end's stdout and stderr)
#   FAULTS_SEED=N                the user-space link's random seed (default 1)
#
# Two namespaces, upf-<pid>-a (10.77.0.1) and upf-<pid>-b (10.77.0.2), joined by one
# link and nothing else (no route out, IPv6 off), are made here and deleted on exit.
# Senders run in a, receivers in b. Each scenario's ends print one JSON line each; the
# script adds what the link and the kernels counted, judges, prints one table row, and
# exits non-zero if any row fails. What is judged, the bounds and why: docs/reliability.md.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [ "$(id -u)" -ne 0 ]; then
  echo "faults.sh: needs root (ip netns, tc); run it with sudo" >&2
  exit 2
fi
for tool in ip tc ss jq; do
  command -v "$tool" >/dev/null || {
    echo "faults.sh: $tool is missing (scripts/install-deps.sh test installs it)" >&2
    exit 2
  }
done

cpu_percent=${FAULTS_CPU_PERCENT:-5}
out=${FAULTS_OUT:-$root/.build/faults}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d /tmp/upf-faults.XXXXXX)
ns_a=upf-$$-a
ns_b=upf-$$-b
dev_a=upfa$$
dev_b=upfb$$
addr_a=10.77.0.1
addr_b=10.77.0.2
link_pid=
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null; done
  [ -n "$link_pid" ] && kill "$link_pid" 2>/dev/null
  wait 2>/dev/null
  ip netns del "$ns_a" 2>/dev/null
  ip netns del "$ns_b" 2>/dev/null
  if [ -n "${FAULTS_KEEP:-}" ]; then echo "faults.sh: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "== $*" >&2; }
in_a() { ip netns exec "$ns_a" "$@"; }
in_b() { ip netns exec "$ns_b" "$@"; }
now_ms() { date +%s%3N; }

# The binary.
bin=${USERPROTO_NETFAULT:-}
if [ -z "$bin" ]; then
  log "building userproto-netfault"
  swift build --product userproto-netfault >&2 || exit 2
  bin=$(swift build --show-bin-path)/userproto-netfault
fi
[ -x "$bin" ] || { echo "faults.sh: $bin is not an executable" >&2; exit 2; }

# MARK: The link

make_namespaces() {
  ip netns add "$ns_a" && ip netns add "$ns_b" || exit 2
  for ns in "$ns_a" "$ns_b"; do
    ip -n "$ns" link set lo up
    # No IPv6: nothing but the scenario's own packets crosses the link.
    ip netns exec "$ns" sh -c 'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6;
      echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6'
  done
}

# netem on a veth pair, if this kernel has sch_netem.
setup_netem() {
  ip link add "$dev_a" netns "$ns_a" type veth peer name "$dev_b" netns "$ns_b" || return 1
  ip -n "$ns_a" addr add "$addr_a/24" dev "$dev_a"
  ip -n "$ns_b" addr add "$addr_b/24" dev "$dev_b"
  ip -n "$ns_a" link set "$dev_a" up
  ip -n "$ns_b" link set "$dev_b" up
  # Static neighbours: no ARP on the link, so every packet netem drops is the
  # scenario's.
  local mac_a mac_b
  mac_a=$(ip -n "$ns_a" -j link show dev "$dev_a" | jq -r '.[0].address')
  mac_b=$(ip -n "$ns_b" -j link show dev "$dev_b" | jq -r '.[0].address')
  ip -n "$ns_a" neigh replace "$addr_b" lladdr "$mac_b" dev "$dev_a" nud permanent
  ip -n "$ns_b" neigh replace "$addr_a" lladdr "$mac_a" dev "$dev_b" nud permanent
  in_a tc qdisc add dev "$dev_a" root netem delay 0ms limit 100000 2>/dev/null || {
    ip -n "$ns_a" link del "$dev_a"
    return 1
  }
  in_b tc qdisc add dev "$dev_b" root netem delay 0ms limit 100000
  link_kind=netem
}

# scripts/faults-link.c on a TUN device in each namespace.
setup_tun() {
  local cc=${CC:-}
  if [ -z "$cc" ]; then
    for candidate in cc gcc clang; do
      command -v "$candidate" >/dev/null && { cc=$candidate; break; }
    done
  fi
  [ -n "$cc" ] || { echo "faults.sh: no C compiler for scripts/faults-link.c" >&2; exit 2; }
  "$cc" -O2 -Wall -Wextra -o "$work/faults-link" "$root/scripts/faults-link.c" || exit 2
  : >"$work/link.conf"
  "$work/faults-link" --ns-a "/run/netns/$ns_a" --dev-a "$dev_a" --ns-b "/run/netns/$ns_b" --dev-b "$dev_b" \
    --config "$work/link.conf" --stats "$work/link.stats" --seed "${FAULTS_SEED:-1}" >"$work/link.out" &
  link_pid=$!
  for _ in $(seq 100); do grep -q ready "$work/link.out" 2>/dev/null && break; sleep 0.05; done
  grep -q ready "$work/link.out" || { echo "faults.sh: faults-link did not start" >&2; exit 2; }
  ip -n "$ns_a" addr add "$addr_a" peer "$addr_b" dev "$dev_a"
  ip -n "$ns_b" addr add "$addr_b" peer "$addr_a" dev "$dev_b"
  for pair in "$ns_a $dev_a" "$ns_b $dev_b"; do
    set -- $pair
    ip -n "$1" link set "$2" txqueuelen 10000
    ip -n "$1" link set "$2" up
  done
  link_kind=tun
}

# Applies a profile to both directions of the link, and zeroes its counters.
apply_profile() {
  local name=$1 netem conf
  case $name in
    clean) netem="delay 0ms" conf="" ;;
    loss1) netem="loss 1%" conf="loss=1" ;;
    loss10) netem="loss 10%" conf="loss=10" ;;
    delay) netem="delay 50ms 10ms" conf="delay_ms=50 jitter_ms=10" ;;
    reorder) netem="delay 10ms reorder 25% 50%" conf="delay_ms=10 reorder=25" ;;
    dup) netem="duplicate 5%" conf="duplicate=5" ;;
    blackhole) netem="loss 100%" conf="loss=100" ;;
    *) echo "faults.sh: unknown profile $name" >&2; exit 2 ;;
  esac
  if [ "$link_kind" = netem ]; then
    # del + add, not change: the drop counters start from zero.
    in_a tc qdisc del dev "$dev_a" root 2>/dev/null
    in_b tc qdisc del dev "$dev_b" root 2>/dev/null
    in_a tc qdisc add dev "$dev_a" root netem $netem limit 100000
    in_b tc qdisc add dev "$dev_b" root netem $netem limit 100000
  else
    echo "$conf limit=100000" >"$work/link.conf"
    kill -HUP "$link_pid"
    sleep 0.05
  fi
}

# What the link dropped of the UDP datagrams from a to b since the profile
# was applied (netem: the qdisc's drops on a's device, which carries only
# the scenario's datagrams; tun: faults-link's udp_ counters).
link_udp_drops() {
  if [ "$link_kind" = netem ]; then
    in_a tc -s -j qdisc show dev "$dev_a" | jq '[.[] | select(.kind == "netem") | .drops] | add // 0'
  else
    rm -f "$work/link.stats"
    kill -USR1 "$link_pid"
    for _ in $(seq 100); do [ -f "$work/link.stats" ] && break; sleep 0.02; done
    awk '$1 == "direction=a_to_b" {
      for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
      print v["udp_lost"] + v["udp_overflow"] + v["udp_write_errors"] }' "$work/link.stats"
  fi
}

# Datagrams the link duplicated from a to b (tun only; netem does not count them).
link_udp_duplicated() {
  if [ "$link_kind" = netem ]; then echo -1; return; fi
  awk '$1 == "direction=a_to_b" {
    for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    print v["udp_duplicated"] }' "$work/link.stats"
}

# The kernels' own UDP drop counters: a's SndbufErrors, b's InErrors (which
# include RcvbufErrors) and NoPorts, and both devices' drops. Printed as
# one number; called before and after a run.
kernel_udp_drops() {
  local a b dev
  a=$(in_a awk '/^Udp:/ && $2 ~ /^[0-9]/ { print $7 }' /proc/net/snmp)
  b=$(in_b awk '/^Udp:/ && $2 ~ /^[0-9]/ { print $3 + $4 }' /proc/net/snmp)
  dev=$(( $(ip -n "$ns_a" -s -j link show dev "$dev_a" | jq '.[0].stats64.tx.dropped') + \
    $(ip -n "$ns_b" -s -j link show dev "$dev_b" | jq '.[0].stats64.rx.dropped') ))
  echo $((a + b + dev))
}

# The bytes the kernels hold on the scenario's TCP connections to `port`:
# a's send queues plus b's receive queues (ss; -1 if there is none).
kernel_queued_bytes() {
  local port=$1 sendq recvq
  sendq=$(in_a ss -Htn "dport = :$port" | awk '{ s += $3 } END { print s + 0 }')
  recvq=$(in_b ss -Htn "sport = :$port" | awk '{ s += $2 } END { print s + 0 }')
  echo $((sendq + recvq))
}

# MARK: Running the ends

# start NAME NS ARGS...: runs the netfault binary in namespace NS in the
# background, its output in $work/NAME.out; sets $started to its pid.
start() {
  local name=$1 ns=$2
  shift 2
  ip netns exec "$ns" "$bin" "$@" >"$work/$name.out" 2>"$work/$name.err" &
  started=$!
  pids+=("$started")
}

# start_limited NAME NS FDLIMIT ARGS...: the same under `ulimit -n FDLIMIT`.
start_limited() {
  local name=$1 ns=$2 limit=$3
  shift 3
  ip netns exec "$ns" bash -c 'ulimit -n "$1"; shift; exec "$@"' limit "$limit" "$bin" "$@" \
    >"$work/$name.out" 2>"$work/$name.err" &
  started=$!
  pids+=("$started")
}

# Waits until NAME printed its listening line.
wait_listening() {
  local name=$1
  for _ in $(seq 200); do
    grep -q '"event":"listening"' "$work/$name.out" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "faults.sh: $name never listened: $(cat "$work/$name.err")" >&2
  return 1
}

# Waits for pid $1 (at most $2 seconds, then SIGKILL).
finish() {
  local pid=$1 limit=${2:-120}
  for _ in $(seq $((limit * 20))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
}

# The final JSON line of NAME (the last line that is not an event), saved
# to $out/SCENARIO-NAME.json; {} if there is none.
result() {
  local name=$1 line
  line=$(grep -v '"event"' "$work/$name.out" 2>/dev/null | tail -n 1)
  [ -n "$line" ] && jq -e . >/dev/null 2>&1 <<<"$line" || line='{}'
  echo "$line" >"$out/$scenario-$name.json"
  echo "$line"
}

# Reads the count a --progress file holds (0 if none yet).
progress() { local n=; [ -f "$1" ] && read -r n <"$1"; echo "${n:-0}"; }

# Waits until the --progress file $1 reaches $2 (at most $3 seconds).
wait_progress() {
  for _ in $(seq $(($3 * 50))); do
    [ "$(progress "$1")" -ge "$2" ] && return 0
    sleep 0.02
  done
  return 1
}

j() { jq -r "$2" <<<"$1"; }

# A scenario whose receiver never listened: a failed row.
no_listener() {
  problems="the receiver never listened: $(head -c 300 "$work/recv.err" "$work/recv1.err" 2>/dev/null)"
  row - - - - - -
}

# MARK: Judging

# One row per scenario; $problems collects what failed.
rows=()
failed=0
problems=

check() {  # check CONDITION-TEXT MESSAGE: evaluates an arithmetic condition
  if ! (( $1 )); then problems+="${problems:+; }$2"; fi
}

cpu_ok() {  # cpu_ok WAIT_MS WAIT_CPU_MS: within the bound (or nothing waited)
  local wait=$1 cpu=$2
  [ "$wait" -le 0 ] && return 0
  (( cpu * 100 <= wait * cpu_percent ))
}

row() {  # row ACCEPTED DELIVERED COUNTED UNCOUNTED FDS CPU
  local verdict=PASS
  if [ -n "$problems" ]; then
    verdict="FAIL: $problems"
    failed=1
  fi
  rows+=("$(printf '%-24s %9s %9s %8s %9s %-13s %-16s %s' "$scenario" "$1" "$2" "$3" "$4" "$5" "$6" "$verdict")")
  echo "${rows[-1]}" >&2
  problems=
}

fds_text() {  # fds_text JSON...: before->after of each end
  local text= line
  for line in "$@"; do text+="${text:+ }$(j "$line" '.fds_before')>$(j "$line" '.fds_after')"; done
  echo "$text"
}

fds_check() {  # fds_check JSON...: every end closed what it opened
  local line
  for line in "$@"; do
    check "$(j "$line" '.fds_after // -9') == $(j "$line" '.fds_before // -8')" \
      "$(j "$line" '.role') leaked fds ($(j "$line" '.fds_before')->$(j "$line" '.fds_after'))"
  done
}

listener_fds_check() {  # the receiver is back to its listening baseline
  check "$(j "$1" '.fds_idle // -9') == $(j "$1" '.fds_listening // -8')" \
    "receiver kept fds after its pipes went ($(j "$1" '.fds_listening')->$(j "$1" '.fds_idle'))"
}

wait_check() {  # wait_check JSON...: CPU while waiting within the bound
  local line text=
  for line in "$@"; do
    local w c
    w=$(j "$line" '.wait_ms // 0')
    c=$(j "$line" '.wait_cpu_ms // 0')
    text+="${text:+ }$c/${w}ms"
    cpu_ok "$w" "$c" || problems+="${problems:+; }$(j "$line" '.role') used $c ms CPU in $w ms of waiting"
  done
  cpu_text=$text
}

sum_dropped() { j "$1" '[.dropped // {} | to_entries[] | .value] | add // 0'; }

# MARK: Scenarios

port=5600
next_port() { port=$((port + 1)); }

# One stream over SP/TCP under the current profile: PROTO (push, pub, req).
tcp_profile_run() {
  local proto=$1 peer count size=1024 extra_send=() extra_recv=()
  case $proto in
    push) peer=pull count=5000 ;;
    # PUB drops what a lossy link cannot take (counted at the sender), so
    # the subscriber stops 3 s after its last message instead of waiting
    # for all of them or for the publisher's pipe to end.
    pub) peer=sub count=5000 extra_send=(--rate 5000) extra_recv=(--idle-exit-ms 3000) ;;
    req) peer=rep count=50 ;;
  esac
  next_port
  local url=tcp://$addr_b:$port
  start recv "$ns_b" recv --proto "$peer" --listen "$url" --expect "$count" --settle-ms 500 --seconds 90 \
    --until-no-pipes "${extra_recv[@]}"
  local recv_pid=$started
  wait_listening recv || { no_listener; return; }
  start send "$ns_a" send --proto "$proto" --dial "$url" --count "$count" --size "$size" --seconds 90 \
    "${extra_send[@]}"
  local send_pid=$started
  finish "$send_pid" 120
  finish "$recv_pid" 120
  local s r
  s=$(result send)
  r=$(result recv)
  local accepted delivered counted dups gaps
  accepted=$(j "$s" '.accepted // 0')
  counted=$(( $(sum_dropped "$s") + $(sum_dropped "$r") ))
  if [ "$proto" = req ]; then
    # The replies came back to the requester; the REP may see a request twice
    # (REQ resends it after 1 s without a reply), and the REQ then ignores
    # the second reply: neither is a loss. A request without a reply is.
    delivered=$(j "$s" '.delivered // 0')
    counted=$(j "$s" '(.dropped.unanswered // 0) + (.dropped.wrong_replies // 0)')
    gaps=0
  else
    delivered=$(j "$r" '.delivered // 0')
    dups=$(j "$r" '.duplicates // 0')
    gaps=$(j "$r" '.gaps // 0')
    check "$dups == 0" "$dups duplicates delivered over TCP"
  fi
  local uncounted=$((accepted - delivered - counted))
  check "$accepted == $(j "$s" '.count // -1')" "accepted $accepted of $(j "$s" '.count')"
  check "$uncounted == 0" "$uncounted messages lost silently"
  # PUB drops (and counts) copies its subscriber's pipe cannot take: those
  # are gaps. Otherwise TCP delivers everything, in order.
  if [ "$proto" != pub ]; then
    check "$gaps == 0" "$gaps gaps"
    check "$delivered == $accepted" "TCP delivered $delivered of $accepted"
  fi
  check "$(j "$s" '.exit // 1') == 0 && $(j "$r" '.exit // 1') == 0" "an end failed: $(j "$s" '.error // ""') $(j "$r" '.error // ""')"
  fds_check "$s" "$r"
  listener_fds_check "$r"
  wait_check "$s" "$r"
  row "$accepted" "$delivered" "$counted" "$uncounted" "$(fds_text "$s" "$r")" "$cpu_text"
}

# UDP under the current profile: every datagram the sender handed on is
# delivered or counted dropped by someone (the link, a kernel, the socket).
udp_profile_run() {
  local count=5000
  next_port
  local url=udp://$addr_b:$port
  local kernel_before kernel_after
  start recv "$ns_b" udp-recv --listen "$url" --expect "$count" --settle-ms 500 --idle-exit-ms 2000 --seconds 60
  local recv_pid=$started
  wait_listening recv || { no_listener; return; }
  kernel_before=$(kernel_udp_drops)
  start send "$ns_a" udp-send --dial "$url" --count "$count" --size 256 --rate 5000 --seconds 60
  local send_pid=$started
  finish "$send_pid" 90
  finish "$recv_pid" 90
  kernel_after=$(kernel_udp_drops)
  local s r link dup
  s=$(result send)
  r=$(result recv)
  link=$(link_udp_drops)
  dup=$(link_udp_duplicated)
  local accepted delivered counted uncounted
  accepted=$(j "$s" '.accepted // 0')
  delivered=$(j "$r" '.delivered // 0')
  counted=$(( $(sum_dropped "$s") + $(j "$s" '.queued_at_close // 0') + $(sum_dropped "$r") + link + \
    kernel_after - kernel_before ))
  uncounted=$((accepted - delivered - counted))
  echo "{\"link\":\"$link_kind\",\"link_udp_drops\":$link,\"kernel_udp_drops\":$((kernel_after - kernel_before)),\"link_udp_duplicated\":$dup}" \
    >"$out/$scenario-link.json"
  check "$accepted == $count" "accepted $accepted of $count"
  check "$uncounted == 0" "$uncounted datagrams unaccounted for (link dropped $link, kernels $((kernel_after - kernel_before)))"
  if [ "$dup" -ge 0 ]; then
    check "$(j "$r" '.duplicates // 0') == $dup" "$(j "$r" '.duplicates') duplicates received, the link made $dup"
  fi
  fds_check "$s" "$r"
  wait_check "$s" "$r"
  row "$accepted" "$delivered" "$counted" "$uncounted" "$(fds_text "$s" "$r")" "$cpu_text"
}

profile_scenarios() {
  local profile=$1
  apply_profile "$profile"
  for proto in push pub req; do
    scenario=$profile-tcp-$proto
    tcp_profile_run "$proto"
  done
  scenario=$profile-udp
  apply_profile "$profile"  # the UDP counters start from zero
  udp_profile_run
  apply_profile clean
}

# A receiver that stops reading for 3 s: the sender's fd stops showing
# writable (its queues bounded by the watermarks), it waits without
# spinning, and every accepted message arrives once the receiver reads.
stall_scenario() {
  scenario=stall
  apply_profile clean
  next_port
  local url=tcp://$addr_b:$port count=20000 hwm=65536
  start recv "$ns_b" recv --proto pull --listen "$url" --expect "$count" --stall-ms 3000 --recv-hwm "$hwm" \
    --settle-ms 300 --seconds 90 --until-no-pipes
  local recv_pid=$started
  wait_listening recv || { no_listener; return; }
  start send "$ns_a" send --proto push --dial "$url" --count "$count" --size 1024 --send-hwm "$hwm" --seconds 90
  local send_pid=$started
  finish "$send_pid" 120
  finish "$recv_pid" 120
  local s r
  s=$(result send)
  r=$(result recv)
  local accepted delivered counted uncounted blocked stall stall_cpu rss
  accepted=$(j "$s" '.accepted // 0')
  delivered=$(j "$r" '.delivered // 0')
  counted=$(( $(sum_dropped "$s") + $(sum_dropped "$r") ))
  uncounted=$((accepted - delivered - counted))
  blocked=$(j "$s" '.blocked_ms // 0')
  stall=$(j "$r" '.stall_ms // 0')
  stall_cpu=$(j "$r" '.stall_cpu_ms // 0')
  rss=$(j "$s" '.rss_max_kb // 0')
  check "$accepted == $count && $delivered == $accepted && $counted == 0" \
    "accepted $accepted, delivered $delivered, dropped $counted"
  check "$(j "$s" '.would_block // 0') >= 1 && $blocked >= 1500" "the sender was not held back (blocked $blocked ms)"
  cpu_ok "$stall" "$stall_cpu" || problems+="${problems:+; }the stalled receiver used $stall_cpu ms CPU in $stall ms"
  check "$rss <= 262144" "the sender's peak RSS was $rss KiB (bound 256 MiB)"
  fds_check "$s" "$r"
  listener_fds_check "$r"
  wait_check "$s" "$r"
  row "$accepted" "$delivered" "$counted" "$uncounted" "$(fds_text "$s" "$r")" "$cpu_text blocked=${blocked}ms"
}

# The sender is SIGKILLed mid-stream: the receiver keeps a gapless prefix
# of what was sent, sees its pipe go, and is back to its baseline.
kill_sender_scenario() {
  scenario=kill-sender
  apply_profile clean
  next_port
  local url=tcp://$addr_b:$port size=1024
  start recv "$ns_b" recv --proto pull --listen "$url" --no-pipe-exit-ms 1000 --seconds 60
  local recv_pid=$started
  wait_listening recv || { no_listener; return; }
  start send "$ns_a" send --proto push --dial "$url" --count 1000000 --size "$size" --rate 2000 --seconds 60 \
    --progress "$work/$scenario-send.progress"
  local send_pid=$started
  wait_progress "$work/$scenario-send.progress" 2000 20 || problems+="the stream never started"
  local queued
  queued=$(kernel_queued_bytes "$port")
  kill -9 "$send_pid"
  local sent
  sent=$(progress "$work/$scenario-send.progress")
  finish "$send_pid" 5
  finish "$recv_pid" 60
  local r
  r=$(result recv)
  echo "{\"role\":\"send\",\"killed\":true,\"accepted_at_kill\":$sent,\"kernel_queued_bytes\":$queued}" \
    >"$out/$scenario-send.json"
  local delivered uncounted bound
  delivered=$(j "$r" '.delivered // 0')
  uncounted=$((sent - delivered))
  # What a killed PUSH can hold: its send queue and its pipe's output (each
  # at most the 256 KiB watermark, in messages of size + 64), what the
  # kernels held (ss), and the message it was writing.
  bound=$(( 2 * 262144 / (size + 64) + queued / (size + 8) + 2 ))
  check "$delivered == $(j "$r" '.contiguous_prefix // -1')" "the receiver's messages are not a gapless prefix"
  check "$(j "$r" '.duplicates // 1') == 0" "duplicates"
  check "$uncounted >= 0 && $uncounted <= $bound" "$uncounted in flight at the kill (bound $bound)"
  check "$(j "$r" '.socket.pipes_removed // 0') >= 1" "the receiver never saw its pipe go"
  check "$(j "$r" '.exit // 1') == 0" "the receiver failed: $(j "$r" '.error // ""')"
  fds_check "$r"
  listener_fds_check "$r"
  wait_check "$r"
  row "$sent" "$delivered" 0 "$uncounted<=$bound" "$(fds_text "$r")" "$cpu_text"
}

# The receiver is SIGKILLed mid-stream and a new one takes its address: the
# sender counts what its dead pipe held, re-dials, and the new receiver gets
# every later message with no gap.
kill_receiver_scenario() {
  scenario=kill-receiver
  apply_profile clean
  next_port
  local url=tcp://$addr_b:$port size=1024 count=10000
  start recv1 "$ns_b" recv --proto pull --listen "$url" --seconds 60 --progress "$work/$scenario-recv1.progress"
  local recv1_pid=$started
  wait_listening recv1 || { no_listener; return; }
  start send "$ns_a" send --proto push --dial "$url" --count "$count" --size "$size" --rate 2000 --seconds 90
  local send_pid=$started
  wait_progress "$work/$scenario-recv1.progress" 2000 20 || problems+="the stream never started"
  local queued
  queued=$(kernel_queued_bytes "$port")
  kill -9 "$recv1_pid"
  finish "$recv1_pid" 5
  local first
  first=$(progress "$work/$scenario-recv1.progress")
  echo "{\"role\":\"recv\",\"killed\":true,\"delivered\":$first,\"kernel_queued_bytes\":$queued}" \
    >"$out/$scenario-recv1.json"
  start recv2 "$ns_b" recv --proto pull --listen "$url" --until-sequence $((count - 1)) --settle-ms 500 \
    --seconds 90 --until-no-pipes
  local recv2_pid=$started
  finish "$send_pid" 120
  finish "$recv2_pid" 120
  local s r
  s=$(result send)
  r=$(result recv2)
  local accepted second lowest lost counted uncounted bound
  accepted=$(j "$s" '.accepted // 0')
  second=$(j "$r" '.delivered // 0')
  lowest=$(j "$r" '.lowest_seq // -1')
  lost=$((lowest - first))
  counted=$(sum_dropped "$s")
  uncounted=$((accepted - first - second - counted))
  # What dies with a killed PULL besides what its sender counted: the
  # kernels' queues (ss), its own receive queue (256 KiB watermark, in
  # messages of size + 64), and the message it was taking.
  bound=$(( queued / (size + 8) + 262144 / (size + 64) + 2 ))
  check "$accepted == $count" "accepted $accepted of $count"
  check "$(j "$r" '.highest_seq // -1') == $((count - 1)) && $(j "$r" '.gaps // 1') == 0" \
    "the new receiver's messages have gaps or stop short ($(j "$r" '.lowest_seq')..$(j "$r" '.highest_seq'))"
  check "$(j "$r" '.duplicates // 1') == 0" "duplicates"
  check "$lost >= 0 && $uncounted == $lost - $counted" \
    "inconsistent: the new receiver starts at $lowest, the first delivered $first"
  check "$uncounted >= 0 && $uncounted <= $bound" "$uncounted lost uncounted (bound $bound)"
  check "$(j "$s" '.socket.reconnects // 0') >= 1" "the sender never re-dialed"
  check "$(j "$s" '.exit // 1') == 0 && $(j "$r" '.exit // 1') == 0" "an end failed: $(j "$s" '.error // ""') $(j "$r" '.error // ""')"
  fds_check "$s" "$r"
  listener_fds_check "$r"
  wait_check "$s" "$r"
  row "$accepted" "$((first + second))" "$counted" "$uncounted<=$bound" "$(fds_text "$s" "$r")" "$cpu_text"
}

# The receiver's namespace drops everything mid-stream (a half-open
# connection): with TCP keep-alive 2 s + 3 x 1 s (user timeout the same) both
# ends notice within 5 s; without it, neither does within 20 s.
halfopen_scenario() {
  local keepalive=$1 idle=2 interval=1 probes=3
  local detection=$((idle + interval * probes)) slack=2
  next_port
  apply_profile clean
  local url=tcp://$addr_b:$port size=1024 options=() seconds=30
  if [ "$keepalive" = yes ]; then
    scenario=halfopen
    options=(--keepalive "$idle,$interval,$probes")
  else
    scenario=halfopen-nokeepalive
    seconds=15
  fi
  start recv "$ns_b" recv --proto pull --listen "$url" --no-pipe-exit-ms 500 --seconds "$seconds" "${options[@]}"
  local recv_pid=$started
  wait_listening recv || { no_listener; return; }
  start send "$ns_a" send --proto push --dial "$url" --count 1000000 --size "$size" --rate 200 --seconds "$seconds" \
    --stop-after-pipe-loss-ms 1000 --drain-seconds 1 --progress "$work/$scenario-send.progress" "${options[@]}"
  local send_pid=$started
  wait_progress "$work/$scenario-send.progress" 200 20 || problems+="the stream never started"
  apply_profile blackhole
  local t0 queued=0 q give_up
  t0=$(now_ms)
  give_up=$((t0 + (seconds + 30) * 1000))
  # The most bytes the kernels held on the port's connections while the
  # link was dead (they cannot drain: nothing gets through). The largest
  # sample, not the last: once keep-alive kills the connection the sender
  # re-dials, and the new attempt's few queued bytes would be the last.
  while kill -0 "$send_pid" 2>/dev/null && [ "$(now_ms)" -lt "$give_up" ]; do
    q=$(kernel_queued_bytes "$port")
    [ "$q" -gt "$queued" ] && queued=$q
    grep -q . "$work/send.out" 2>/dev/null && break
    sleep 0.2
  done
  finish "$send_pid" 60
  finish "$recv_pid" 60
  apply_profile clean
  local s r
  s=$(result send)
  r=$(result recv)
  local send_lost recv_lost send_after recv_after
  send_lost=$(j "$s" '.pipe_lost_at_ms // -1')
  recv_lost=$(j "$r" '.pipe_lost_at_ms // -1')
  send_after=$(( send_lost < 0 ? -1 : send_lost - t0 ))
  recv_after=$(( recv_lost < 0 ? -1 : recv_lost - t0 ))
  local accepted delivered counted uncounted bound
  accepted=$(j "$s" '.accepted // 0')
  delivered=$(j "$r" '.delivered // 0')
  counted=$(( $(sum_dropped "$s") + $(j "$s" '.queued_at_close // 0') ))
  uncounted=$((accepted - delivered - counted))
  bound=$(( queued / (size + 8) + 2 ))
  if [ "$keepalive" = yes ]; then
    local limit=$(( (detection + slack) * 1000 ))
    check "$send_after >= 0 && $send_after <= $limit" "the sender noticed after $send_after ms (bound $limit)"
    check "$recv_after >= 0 && $recv_after <= $limit" "the receiver noticed after $recv_after ms (bound $limit)"
    check "$(j "$r" '.contiguous_prefix // -1') == $delivered" "the receiver's messages have gaps"
    check "$uncounted >= 0 && $uncounted <= $bound" "$uncounted lost uncounted (kernel-held bound $bound)"
    fds_check "$s" "$r"
    listener_fds_check "$r"
  else
    # Documented behaviour without keep-alive: nothing notices (the sender's
    # retransmissions give up after tcp_retries2, about 15 minutes).
    check "$send_after < 0 && $recv_after < 0" "a pipe failed without keep-alive ($send_after, $recv_after ms)"
    fds_check "$s" "$r"
  fi
  wait_check "$s" "$r"
  row "$accepted" "$delivered" "$counted" "$uncounted<=$bound" "$(fds_text "$s" "$r")" \
    "$cpu_text seen=${send_after}/${recv_after}ms"
}

# A listener out of fds (ulimit -n 64) while 150 connections are held:
# accept fails with EMFILE, the listener retries every 100 ms without
# spinning, and serves a real sender once the connections are gone.
emfile_scenario() {
  scenario=emfile
  apply_profile clean
  next_port
  local url=tcp://$addr_b:$port count=1000 hold=3000
  start_limited recv "$ns_b" 64 recv --proto pull --listen "$url" --expect "$count" --settle-ms 300 --seconds 60 \
    --until-no-pipes
  local recv_pid=$started
  wait_listening recv || { no_listener; return; }
  start hold "$ns_a" hold --dial "tcp://$addr_b:$port" --connections 150 --hold-ms "$hold"
  local hold_pid=$started
  sleep 1
  # The receiver's CPU over a second while it is out of fds (from its
  # /proc/PID/stat: utime + stime, in clock ticks).
  local ticks=$(getconf CLK_TCK) c0 c1 t0 t1
  c0=$(awk '{ print $14 + $15 }' "/proc/$recv_pid/stat")
  t0=$(now_ms)
  sleep 1
  c1=$(awk '{ print $14 + $15 }' "/proc/$recv_pid/stat")
  t1=$(now_ms)
  local emfile_cpu=$(( (c1 - c0) * 1000 / ticks )) emfile_wall=$((t1 - t0))
  finish "$hold_pid" 30
  start send "$ns_a" send --proto push --dial "$url" --count "$count" --size 1024 --seconds 30
  local send_pid=$started
  finish "$send_pid" 60
  finish "$recv_pid" 60
  local s r h
  s=$(result send)
  r=$(result recv)
  h=$(result hold)
  local accepted delivered counted uncounted
  accepted=$(j "$s" '.accepted // 0')
  delivered=$(j "$r" '.delivered // 0')
  counted=$(( $(sum_dropped "$s") + $(sum_dropped "$r") ))
  uncounted=$((accepted - delivered - counted))
  check "$(j "$h" '.connected // 0') == 150" "only $(j "$h" '.connected') of 150 connections were made"
  check "$(j "$r" '.socket.accept_errors // 0') >= 1" "accept never failed (EMFILE expected)"
  cpu_ok "$emfile_wall" "$emfile_cpu" || problems+="${problems:+; }$emfile_cpu ms CPU in $emfile_wall ms out of fds"
  check "$accepted == $count && $delivered == $accepted && $counted == 0" \
    "after the fds freed: accepted $accepted, delivered $delivered, dropped $counted"
  fds_check "$s" "$r"
  listener_fds_check "$r"
  wait_check "$s" "$r"
  row "$accepted" "$delivered" "$counted" "$uncounted" "$(fds_text "$s" "$r")" \
    "$cpu_text emfile=${emfile_cpu}/${emfile_wall}ms"
}

# MARK: Main

all=(clean loss1 loss10 delay reorder dup stall kill-sender kill-receiver halfopen halfopen-nokeepalive emfile)
selected=("$@")
[ ${#selected[@]} -eq 0 ] && selected=("${all[@]}")

make_namespaces
case ${FAULTS_LINK:-auto} in
  netem) setup_netem || { echo "faults.sh: this kernel has no sch_netem (tc netem)" >&2; exit 2; } ;;
  tun) setup_tun ;;
  auto) setup_netem 2>/dev/null || setup_tun ;;
  *) echo "faults.sh: FAULTS_LINK is netem, tun or auto" >&2; exit 2 ;;
esac
log "link: $link_kind between $ns_a ($addr_a) and $ns_b ($addr_b); loop backend: ${USERPROTO_LOOP_BACKEND:-automatic}"

header=$(printf '%-24s %9s %9s %8s %9s %-13s %-16s %s' scenario accepted delivered counted uncounted \
  "fds(s r)" "wait cpu/ms" verdict)
echo "$header" >&2
for name in "${selected[@]}"; do
  case $name in
    clean | loss1 | loss10 | delay | reorder | dup) profile_scenarios "$name" ;;
    stall) stall_scenario ;;
    kill-sender) kill_sender_scenario ;;
    kill-receiver) kill_receiver_scenario ;;
    halfopen) halfopen_scenario yes ;;
    halfopen-nokeepalive) halfopen_scenario no ;;
    emfile) emfile_scenario ;;
    *) echo "faults.sh: unknown scenario $name (${all[*]})" >&2; exit 2 ;;
  esac
done

{
  echo "# scripts/faults.sh $(date -u +%Y-%m-%dT%H:%MZ), link $link_kind, kernel $(uname -r)," \
    "backend ${USERPROTO_LOOP_BACKEND:-automatic}, CPU bound $cpu_percent%"
  echo "$header"
  printf '%s\n' "${rows[@]}"
} | tee "$out/results.txt"
exit $failed
