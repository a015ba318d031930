#!/usr/bin/env bash
# The load benchmark: meshdns against Knot DNS, same fleet, same queries.
#
#   benches/load.sh            # 20 s per run, release build
#   benches/load.sh --smoke    # 2 s per run, the debug build (CI: keeps the script alive)
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
if [ "${1:-}" = "--smoke" ]; then
  SECS=2
  PROFILE=debug
fi
CLIENTS=4

. benches/common.sh

"$BIN/loadfleet" files --dir "$DIR" --clients "$CLIENTS"

# Knot: one UDP worker, pinned to core 0.
KNOT_PORT=$(free_port)
mkdir -p "$DIR/knot-db" "$DIR/knot-run"
cat > "$DIR/knot.conf" <<CONF
server:
    rundir: "$DIR/knot-run"
    listen: 127.0.0.1@$KNOT_PORT
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "$DIR/knot-db"
log:
  - target: stderr
    any: error
zone:
  - domain: global.
    file: "$DIR/global.zone"
    journal-content: none
CONF
taskset -c 0 "$KNOTD" -c "$DIR/knot.conf" > "$DIR/knot.log" 2>&1 &
KNOT_PID=$!
PIDS+=("$KNOT_PID")
wait_answers "$KNOT_PORT"
knot_qps=$(drive "$KNOT_PORT" knot)

# meshdns: one UDP worker, pinned to core 0; the fleet streams in from
# 100 syncer publishers on core 1 (idle but for heartbeats once loaded).
start_meshdns
push_fleet
wait_answers "$DNS_PORT"
meshdns_qps=$(drive "$DNS_PORT" meshdns)

ratio=$(awk -v m="$meshdns_qps" -v k="$knot_qps" 'BEGIN { if (k > 0) printf "%.2f", m / k; else print "n/a" }')
echo "meshdns_qps=$meshdns_qps"
echo "knot_qps=$knot_qps"
echo "ratio=$ratio"

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
