#!/usr/bin/env bash
# DNS during the reconnect storm (issue 12: "DNS answers during that
# storm: at least 50% of the idle rate, no query unanswered").
#
#   benches/storm_dns.sh            # release, 1,000 clusters x 100 x 10, zone and node
#   benches/storm_dns.sh --smoke    # debug, 100 clusters (CI: keeps the script alive)
#   benches/storm_dns.sh BASE_BIN   # also BASE_BIN's meshdns, alternated (same run)
#
# The scenario of the issue: a hub restarts from its --state-file and the
# whole fleet reconnects at once.
#   1. A hub (core 0) is loaded with the fleet by `loadfleet push` (core 1)
#      and stopped with SIGTERM, which saves its state file.
#   2. A new hub starts from that file: it answers at once with every
#      cluster's last endpoints; a hub that restores liveness (ninth
#      session) answers live, since every cluster was heard within
#      --cluster-ttl; an older one answers stale, fail-open.
#      STORM_AGED=1 waits --cluster-ttl (15 s) and a second between the
#      stop and the restart, so every cluster is restored stale by either
#      hub: the old path, every view rebuilt as its clusters return.
#   3. One dnsperf process (core 1, 4 clients, 200 queries outstanding,
#      2 s timeout) asks the fleet's names for the whole run and prints
#      its rate every 0.5 s. After 3 s a new `loadfleet push` connects all
#      1,000 publishers at once (the storm) and prints two times from the
#      storm's start: when every answer was first complete and live
#      (`ready`; about 0 for a hub restored live), and when every
#      syncer's Snapshot had been accepted (`accepted`: the storm's real
#      work, decode, validation, compare); dnsperf goes on 6 s more.
#   4. The rate is averaged over three phases: before the storm (the hub
#      otherwise idle), during it (intervals wholly inside [storm start,
#      the later of the two times]), and idle after it (from 1 s after
#      the storm to the end: live answers, heartbeats only). The ratio is
#      during / idle-after; the target is >= 0.5. dnsperf's lost queries
#      (no answer within 2 s) are counted over the whole run; the target
#      is 0.
# STORM_PERF=PATH records the hub through the storm with perf (PATH-<label>).
# The hub's CPU time through the storm (user + system) is printed beside
# its wall time: on a shared machine it is the steadier figure.
# STORM_DNS=0 runs no dnsperf (the storm's time alone); STORM_FRESH=1 sends
# the same storm into a hub started empty (no state file), for comparison.
# STORM_BEFORE_SECS=N: the storm N s after the restarted hub answers
# (default 3; dnsperf's "before" phase, which counts against the ttl).
# The restarted hub's peak resident memory (VmHWM: the restore and the
# storm) ends the line.
# STORM_DEBUG=1 also prints the phase boundaries and dnsperf's last intervals.
# The publishers and dnsperf share core 1, so during the storm the client
# has less CPU than when idle: the ratio is a lower bound for the hub.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=2
PROFILE=release
CLUSTERS=1000
AFTER_SECS=6
BASE_BIN=
for arg in "$@"; do
  case "$arg" in
    --smoke) PROFILE=debug; CLUSTERS=100; AFTER_SECS=3 ;;
    *) BASE_BIN=$(realpath "$arg") ;;
  esac
done
CLIENTS=1
. benches/common.sh

big=(--clusters "$CLUSTERS" --services 100 --spread "$CLUSTERS" --endpoints 10 --zone-node)
"$BIN/loadfleet" files --dir "$DIR/q" --clients 1 --nx-percent 5 "${big[@]}"
read -r QFILE QADDR _ < "$DIR/q/clients.txt"

# Mean of dnsperf's interval rates (lines `<epoch>: <qps>`, stamped at the
# end of each 0.5 s interval) whose interval lies in [from, to].
phase_rate() { # file from to
  awk -v a="$2" -v b="$3" -F': ' '/^[0-9]+\.[0-9]+: [0-9.]+$/ {
      end = $1 + 0; start = end - 0.5
      if (start >= a && end <= b) { q += $2; n++ }
    } END { if (n == 0) print "none"; else printf "%.0f\n", q / n }' "$1"
}

one_run() { # label bin
  local label=$1 bin=$2 state=$DIR/$1.state
  if [ -z "${STORM_FRESH:-}" ]; then
    # 1. Load a hub and save its state.
    LABEL=$label-load MESHDNS_BIN=$bin start_meshdns --max-answers 16 --state-file "$state"
    LABEL=$label-load push_fleet "${big[@]}"
    wait_answers "$DNS_PORT"
    # A rollout: the hub stops (SIGTERM, its shutdown save) while the
    # syncers are connected; they cannot reach the new one's port.
    kill "$MESHDNS_PID"; wait "$MESHDNS_PID" 2>/dev/null || true
    kill "$PUSH_PID"; wait "$PUSH_PID" 2>/dev/null || true
    [ -s "$state" ] || { echo "storm_dns.sh: no state file saved" >&2; exit 1; }
    # STORM_AGED: down for longer than --cluster-ttl (15 s).
    [ -n "${STORM_AGED:-}" ] && sleep 16
    # 2. The restarted hub answers from it at once.
    LABEL=$label MESHDNS_BIN=$bin start_meshdns --max-answers 16 --state-file "$state"
    wait_answers "$DNS_PORT"
  else
    # STORM_FRESH: the same storm into a hub that starts empty.
    LABEL=$label MESHDNS_BIN=$bin start_meshdns --max-answers 16
    sleep 1
  fi
  # 3. dnsperf through the whole run (unless STORM_DNS=0); the storm 3 s in.
  local perf=$DIR/$label-dnsperf.out perf_pid=
  : > "$perf"
  if [ "${STORM_DNS:-1}" != 0 ]; then
    taskset -c 1 dnsperf -s 127.0.0.1 -p "$DNS_PORT" -a "$QADDR" -d "$DIR/q/$QFILE" \
      -l 600 -c 4 -q 200 -T 1 -t 2 -S 0.5 > "$perf" 2>&1 &
    perf_pid=$!
    PIDS+=("$perf_pid")
  fi
  sleep "${STORM_BEFORE_SECS:-3}"
  local storm_at
  storm_at=$(date +%s.%N)
  local perf_rec=
  if [ -n "${STORM_PERF:-}" ]; then
    perf record -F 499 --call-graph dwarf,16384 -o "$STORM_PERF-$label" -p "$MESHDNS_PID" >/dev/null 2>&1 &
    perf_rec=$!
  fi
  local cpu_before
  cpu_before=$(cpu_ticks "$MESHDNS_PID")
  LABEL=$label push_fleet "${big[@]}"
  local cpu_ms=$(( ($(cpu_ticks "$MESHDNS_PID") - cpu_before) * 1000 / $(getconf CLK_TCK) ))
  [ -n "$perf_rec" ] && { kill -INT "$perf_rec"; wait "$perf_rec" || true; }
  local ready_ms accepted_ms storm_ms
  ready_ms=$(awk '/^ready/ { print $2 }' "$DIR/$label-push.out")
  accepted_ms=$(awk '/^accepted/ { print $2 }' "$DIR/$label-push.out")
  storm_ms=$(( ready_ms > accepted_ms ? ready_ms : accepted_ms ))
  # Idle after the storm, then dnsperf is interrupted (it prints its totals).
  sleep "$AFTER_SECS"
  # Datagrams the hub's socket dropped for want of buffer (ss's d<N>).
  local drops
  drops=$(ss -uamn "sport = :$DNS_PORT" | grep -o 'd[0-9]*)' | tr -dc '0-9')
  if [ -n "$perf_pid" ]; then
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
  fi
  local live_at
  live_at=$(awk -v s="$storm_at" -v m="$storm_ms" 'BEGIN { printf "%.3f", s + m / 1000 }')
  local before during after lost
  before=$(phase_rate "$perf" 0 "$storm_at")
  during=$(phase_rate "$perf" "$storm_at" "$live_at")
  after=$(phase_rate "$perf" "$(awk -v l="$live_at" 'BEGIN { printf "%.3f", l + 1 }')" 9999999999)
  [ -n "${STORM_DEBUG:-}" ] && { echo "storm_at=$storm_at live_at=$live_at"; grep -E "^[0-9]+\.[0-9]+: " "$perf" | tail -12; tail -20 "$perf"; }
  lost=$(awk '/Queries lost:/ { print $3 }' "$perf")
  # What the restore made of the clusters, and how many went stale
  # before their Snapshot was accepted (a hub that restores liveness).
  local restored flipped
  restored=$(sed 's/\x1b\[[0-9;]*m//g' "$DIR/$label.log" | grep -m1 'restored the last saved state' | grep -o 'live=[0-9]*' | tr -dc '0-9' || true)
  flipped=$(grep -c 'missed its heartbeats' "$DIR/$label.log" || true)
  local ratio
  ratio=$(awk -v d="$during" -v a="$after" 'BEGIN { if (d == "none" || a == "none" || a == 0) print "n/a"; else printf "%.2f", d / a }')
  local hwm
  hwm=$(awk '/^VmHWM:/ { printf "%d", $2 / 1024 }' "/proc/$MESHDNS_PID/status" 2>/dev/null || true)
  echo "$label: storm to every answer complete and live ${ready_ms} ms, to every Snapshot accepted ${accepted_ms} ms (hub CPU ${cpu_ms} ms); DNS q/s before ${before}, during ${during}, idle after ${after}; during/idle ${ratio}; queries lost ${lost:-?} of $(awk '/Queries completed:/ { print $3 + 0 }' "$perf"), the hub's socket dropped ${drops:-?}; restored live ${restored:-0} of $CLUSTERS, stale before their Snapshot ${flipped:-0}; hub peak RSS ${hwm:-?} MiB"
  kill "$PUSH_PID" "$MESHDNS_PID" 2>/dev/null || true
  wait "$PUSH_PID" "$MESHDNS_PID" 2>/dev/null || true
}

ROUNDS=1
[ -n "$BASE_BIN" ] && ROUNDS=2
for round in $(seq 1 "$ROUNDS"); do
  [ -n "$BASE_BIN" ] && one_run "base-$round" "$BASE_BIN"
  one_run "new-$round" "$BIN/meshdns"
done
