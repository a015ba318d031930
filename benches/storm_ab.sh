#!/usr/bin/env bash
# The reconnect storm, memory and propagation at a million endpoints,
# alternating two builds of meshdns in one run (a same-run reference):
#
#   benches/storm_ab.sh BASE_MESHDNS [ROUNDS]
#
# BASE_MESHDNS is the reference `meshdns` binary (e.g. main's HEAD built
# into another target dir); the other is this tree's release build. The
# fleet is `loadfleet push --zone-node` (this tree's): 1,000 clusters x
# 100 services x 10 endpoints, a zone and a node on every endpoint, every
# publisher connecting at once. Per round and build it prints the storm
# (until every answer is complete and live), /healthz during it, resident
# memory and bytes per endpoint, and propagation of 200 Deltas.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:?usage: benches/storm_ab.sh BASE_MESHDNS [ROUNDS]}
ROUNDS=${2:-2}
SECS=2
PROFILE=release
CLIENTS=1
CLUSTERS=${CLUSTERS:-1000}
. benches/common.sh

big=(--clusters "$CLUSTERS" --services 100 --spread "$CLUSTERS" --endpoints 10 --zone-node)
endpoints=$((CLUSTERS * 100 * 10))
for round in $(seq 1 "$ROUNDS"); do
  for build in base new; do
    bin=$BIN/meshdns
    [ "$build" = base ] && bin=$BASE
    LABEL=$build-$round MESHDNS_BIN=$bin start_meshdns --max-answers 16
    LABEL=$build-$round push_fleet "${big[@]}" --churn 200 --admin "127.0.0.1:$ADMIN_PORT"
    out=$DIR/$build-$round-push.out
    for _ in $(seq 1 50); do grep -q '^healthz' "$out" && break; sleep 0.1; done
    wait_answers "$DNS_PORT"
    # The hub's CPU time so far (start-up and the storm): against the
    # storm's wall time, how much of it the shared machine took away.
    cpu=$(awk -v t="$(cpu_ticks "$MESHDNS_PID")" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", t / hz }')
    sleep 2
    rss=$(rss_kib "$MESHDNS_PID")
    kill -USR1 "$PUSH_PID"
    for _ in $(seq 1 600); do grep -q '^propagation' "$out" && break; sleep 0.2; done
    echo "$build round $round: storm $(awk '/^ready/ { print $2 }' "$out") ms (hub CPU ${cpu} s);$(awk '/^healthz/ { $1 = ""; print }' "$out"); rss $((rss / 1024)) MiB, $((rss * 1024 / endpoints)) B/endpoint; $(grep '^propagation' "$out" || echo 'no propagation')"
    kill "$PUSH_PID" "$MESHDNS_PID" 2>/dev/null || true
    wait "$PUSH_PID" "$MESHDNS_PID" 2>/dev/null || true
  done
done
