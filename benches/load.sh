#!/usr/bin/env bash
# The load benchmark: meshdns against Knot DNS, same fleet, same queries.
#
#   benches/load.sh            # 20 s per run, release build
#   benches/load.sh --smoke    # 2 s per run, the debug build (CI: keeps the script alive)
#   benches/load.sh --base BIN # also an A/B against BIN, a meshdns built from an
#                              # earlier commit (same fleet, same queries, same run)
#   benches/load.sh --rrl      # also both servers with response rate limiting on
#                              # (a rate nothing reaches: its cost, not its effect)
#   benches/load.sh --tcp      # also both servers over TCP (dnsperf -m tcp, same
#                              # clients and queries; with --base, the base too)
#
# Flags combine (`--smoke --rrl`).
#
# The fleet (benches/src/shape.rs, Shape::LOAD): 10,000 services over 100
# clusters, each service in 3 clusters with 3 endpoints, one in four
# exports with an unready endpoint. meshdns gets it from 100 real syncer
# publishers over gRPC (`loadfleet push`); Knot gets a static zone of
# every `svc-N.ns-M.global` with all its ready addresses (`loadfleet
# files`). Both are driven by dnsperf with the same query files: 4
# clients, each asking from a different cluster's client CIDR (so
# meshdns answers by locality), 10,000 names each, 5% of them
# nonexistent. The server is pinned to core 0, dnsperf to core 1.
#
# Prints meshdns_qps, knot_qps and their ratio, then each server's
# latency at half of meshdns's peak rate (p50/p99 from dnsperf -v, one
# client process).
# Installs knot and dnsperf (Debian) when run as root; otherwise names
# what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${LOAD_SECONDS:-20}
PROFILE=release
BASE_BIN=
RRL=
TCP=
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SECS=2; PROFILE=debug ;;
    --base) BASE_BIN=$(realpath "$2"); shift ;;
    --rrl) RRL=1 ;;
    --tcp) TCP=1 ;;
    *) echo "load.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
CLIENTS=4
# With --rrl: per source prefix, far above what one dnsperf client asks,
# so nothing is limited and the figure is the cost of the check.
RRL_RATE=1000000

. benches/common.sh

"$BIN/loadfleet" files --dir "$DIR" --clients "$CLIENTS"

# Knot: one UDP worker, pinned to core 0; with a second argument, its
# rrl module at that rate (slip 2, as meshdns's default). Sets KNOT_PORT.
start_knot() { # label [rrl rate]
  KNOT_PORT=$(free_port)
  local d="$DIR/$1"
  mkdir -p "$d/db" "$d/run"
  local module="" zone_module=""
  if [ -n "${2:-}" ]; then
    module=$(printf 'mod-rrl:\n  - id: limit\n    rate-limit: %s\n    slip: 2\n' "$2")
    zone_module="    module: mod-rrl/limit"
  fi
  cat > "$d/knot.conf" <<CONF
server:
    rundir: "$d/run"
    listen: 127.0.0.1@$KNOT_PORT
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "$d/db"
log:
  - target: stderr
    any: error
$module
zone:
  - domain: global.
    file: "$DIR/global.zone"
    journal-content: none
$zone_module
CONF
  taskset -c 0 "$KNOTD" -c "$d/knot.conf" > "$DIR/$1.log" 2>&1 &
  PIDS+=("$!")
  wait_answers "$KNOT_PORT"
}

# A meshdns_dns_* counter of the meshdns on ADMIN_PORT.
counter() { # name
  python3 -c 'import sys, urllib.request
text = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1]).read().decode()
print(sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(sys.argv[2] + " ")))' "$ADMIN_PORT" "$1"
}

start_knot knot
knot_qps=$(drive "$KNOT_PORT" knot)
MAIN_KNOT_PORT=$KNOT_PORT

# meshdns: one UDP worker, pinned to core 0; the fleet streams in from
# 100 syncer publishers on core 1 (idle but for heartbeats once loaded).
start_meshdns
push_fleet
wait_answers "$DNS_PORT"
meshdns_qps=$(drive "$DNS_PORT" meshdns)
MAIN_DNS_PORT=$DNS_PORT

ratio() { awk -v m="$1" -v k="$2" 'BEGIN { if (k > 0) printf "%.2f", m / k; else print "n/a" }'; }
echo "meshdns_qps=$meshdns_qps"
echo "knot_qps=$knot_qps"
echo "ratio=$(ratio "$meshdns_qps" "$knot_qps")"

if [ -n "$BASE_BIN" ]; then
  # Same-run A/B: the earlier binary on its own copy of the fleet, then
  # this one again, alternated so drift on the machine hits both.
  CUR_BIN=$BIN
  BIN_FOR_BASE=$(mktemp -d "$DIR/base.XXXX")
  cp "$BASE_BIN" "$BIN_FOR_BASE/meshdns"
  BIN=$BIN_FOR_BASE LABEL=base start_meshdns
  BIN=$CUR_BIN LABEL=base push_fleet
  wait_answers "$DNS_PORT"
  BASE_PORT=$DNS_PORT
  base_qps=$(drive "$BASE_PORT" base)
  again_qps=$(drive "$MAIN_DNS_PORT" meshdns-again)
  base_qps2=$(drive "$BASE_PORT" base-again)
  echo "ab_current_qps=$meshdns_qps,$again_qps"
  echo "ab_base_qps=$base_qps,$base_qps2"
  echo "ab_ratio=$(ratio $(( meshdns_qps + again_qps )) $(( base_qps + base_qps2 )))"
fi

if [ -n "$RRL" ]; then
  # Both servers with rate limiting on at a rate nothing reaches.
  start_knot knot-rrl "$RRL_RATE"
  knot_rrl_qps=$(drive "$KNOT_PORT" knot-rrl)
  LABEL=meshdns-rrl start_meshdns --rrl-rate "$RRL_RATE"
  LABEL=meshdns-rrl push_fleet
  wait_answers "$DNS_PORT"
  meshdns_rrl_qps=$(drive "$DNS_PORT" meshdns-rrl)
  echo "meshdns_rrl_qps=$meshdns_rrl_qps (rrl off: $meshdns_qps, $(ratio "$meshdns_rrl_qps" "$meshdns_qps"))"
  echo "knot_rrl_qps=$knot_rrl_qps (rrl off: $knot_qps, $(ratio "$knot_rrl_qps" "$knot_qps"))"
  echo "rrl_ratio=$(ratio "$meshdns_rrl_qps" "$knot_rrl_qps")"
  echo "meshdns_rrl_limited=$(counter meshdns_dns_rrl_dropped_total) dropped, $(counter meshdns_dns_rrl_slipped_total) slipped"
fi
if [ -n "$TCP" ]; then
  # Over TCP: each dnsperf client keeps its 4 connections open and
  # pipelines up to 50 queries on them. Knot (tcp-workers: 1) then
  # meshdns (its TCP server on the same one core), then each again.
  knot_tcp=$(MODE=tcp drive "$MAIN_KNOT_PORT" knot-tcp)
  meshdns_tcp=$(MODE=tcp drive "$MAIN_DNS_PORT" meshdns-tcp)
  if [ -n "$BASE_BIN" ]; then
    base_tcp=$(MODE=tcp drive "$BASE_PORT" base-tcp)
  fi
  meshdns_tcp2=$(MODE=tcp drive "$MAIN_DNS_PORT" meshdns-tcp-again)
  knot_tcp2=$(MODE=tcp drive "$MAIN_KNOT_PORT" knot-tcp-again)
  echo "tcp_meshdns_qps=$meshdns_tcp,$meshdns_tcp2"
  echo "tcp_knot_qps=$knot_tcp,$knot_tcp2"
  echo "tcp_ratio=$(ratio $(( meshdns_tcp + meshdns_tcp2 )) $(( knot_tcp + knot_tcp2 )))"
  if [ -n "$BASE_BIN" ]; then
    echo "tcp_base_qps=$base_tcp"
    echo "tcp_ab_ratio=$(ratio $(( (meshdns_tcp + meshdns_tcp2) / 2 )) "$base_tcp")"
  fi
fi
DNS_PORT=$MAIN_DNS_PORT
KNOT_PORT=$MAIN_KNOT_PORT

# Latency at half of meshdns's peak, the same offered rate to both, from
# one dnsperf process (asking from the first client's cluster): with four
# processes sharing the client core, the p99 measures the client's
# scheduler (2-3 ms for both servers), not the server.
half=$(( meshdns_qps / 2 ))
[ "$half" -gt 0 ] || half=1
one_client() { # port label
  read -r file addr _ < "$DIR/clients.txt"
  taskset -c 1 dnsperf -s 127.0.0.1 -p "$1" -a "$addr" -d "$DIR/$file" -l "$SECS" -c 4 -q 50 -T 1 \
    -Q "$half" -v > "$DIR/$2-0.out" 2>&1
}
one_client "$DNS_PORT" meshdns-half
echo "meshdns_latency_at_50pct: $(latency meshdns-half) (offered $half q/s)"
one_client "$KNOT_PORT" knot-half
echo "knot_latency_at_50pct: $(latency knot-half) (offered $half q/s)"
lost=$(cat "$DIR"/meshdns-*.out | awk '/Queries lost:/ { l += $3 } END { print l + 0 }')
echo "meshdns_queries_lost=$lost"
