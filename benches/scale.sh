#!/usr/bin/env bash
# Scale, propagation and fan-out at a million endpoints.
#
#   benches/scale.sh            # release build, 10 s per throughput run
#   benches/scale.sh --smoke    # debug build, a 100,000-endpoint fleet, 2 s runs
#
# `meshdns serve` (one UDP worker, core 0) takes Shape::MILLION from
# `loadfleet push` (core 1): 1,000 clusters, each with its own syncer
# publisher and Export stream (heartbeat every 5 s), each exporting the
# same 100 services with 10 endpoints: 1,000,000 endpoints, 10,000 per
# service. Prints:
#   - load time, resident memory and bytes per endpoint;
#   - idle CPU with 1,000 open export streams, as % of one core;
#   - query throughput at that size against the same queries on a
#     1,000-endpoint fleet (1 cluster × 100 services × 10 endpoints: the
#     same answer shapes), and the ratio;
#   - a follower from scratch (`meshdns serve --follow` the hub, core 1):
#     until it lists the whole fleet, its memory against the hub's; with
#     FOLLOWER_BASE=another meshdns binary, that build's follower is
#     timed too, alternated with this one's (a same-run reference);
#   - propagation: 200 single-endpoint changes, each timed from the
#     publisher getting it to the first DNS answer that shows it, at the
#     hub and at the follower.
# The full-Snapshot-from-one-cluster figure is in-process:
#   cargo bench -p meshdns-benches --bench scale
# and so is the capacity simulation (`capacity`; 10,000 clusters by hand,
# a smoke size here under --smoke).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${LOAD_SECONDS:-10}
PROFILE=release
CLUSTERS=1000
IDLE_SECS=20
CHURN=200
if [ "${1:-}" = "--smoke" ]; then
  SECS=2
  PROFILE=debug
  CLUSTERS=100
  IDLE_SECS=2
  CHURN=20
fi
CLIENTS=4

. benches/common.sh

if [ "$PROFILE" = debug ]; then
  # The capacity simulation at a smoke size: load, memory, publish latency.
  "$BIN/capacity" --clusters 200 --services 10 --endpoints 5 --rounds 20
fi

ROUNDS=3
[ "$PROFILE" = release ] || ROUNDS=1

# Reference: 1,000 endpoints, the same 100 names and answer shapes.
small=(--clusters 1 --services 100 --spread 1 --endpoints 10)
"$BIN/loadfleet" files --dir "$DIR/small" --clients "$CLIENTS" --nx-percent 0 "${small[@]}"
LABEL=small start_meshdns --max-answers 16
LABEL=small push_fleet "${small[@]}"
SMALL_PORT=$DNS_PORT
wait_answers "$SMALL_PORT"

big=(--clusters "$CLUSTERS" --services 100 --spread "$CLUSTERS" --endpoints 10)
endpoints=$((CLUSTERS * 100 * 10))
"$BIN/loadfleet" files --dir "$DIR/big" --clients "$CLIENTS" --nx-percent 0 "${big[@]}"
LABEL=big start_meshdns --max-answers 16
# Every endpoint carries a zone and a node, as real EndpointSlices do.
FOLLOWER_DNS_PORT=$(free_port)
LABEL=big push_fleet "${big[@]}" --zone-node --churn "$CHURN" --admin "127.0.0.1:$ADMIN_PORT" \
  --follower-dns "127.0.0.1:$FOLLOWER_DNS_PORT"
loaded_ms=$(awk '/^ready/ { print $2 }' "$DIR/big-push.out")
# The load is the reconnect storm: every publisher connects at once and
# sends its Snapshot; /healthz was timed every 10 ms meanwhile.
for _ in $(seq 1 50); do grep -q '^healthz' "$DIR/big-push.out" && break; sleep 0.1; done
echo "storm: $CLUSTERS Snapshots at once, every answer complete and live after ${loaded_ms} ms; /healthz during it: $(awk '/^healthz/ { $1 = ""; print }' "$DIR/big-push.out")"
wait_answers "$DNS_PORT"
rss=$(rss_kib "$MESHDNS_PID")
hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$MESHDNS_PID/status")
echo "fleet: $CLUSTERS clusters x 100 services x 10 endpoints = $endpoints endpoints, loaded over gRPC in ${loaded_ms} ms"
echo "registry_rss_mib=$((rss / 1024)) (peak $((hwm / 1024))) bytes_per_endpoint=$((rss * 1024 / endpoints))"

# Idle: every stream open, heartbeats every 5 s, no queries.
sleep 2
t0=$(cpu_ticks "$MESHDNS_PID")
sleep "$IDLE_SECS"
t1=$(cpu_ticks "$MESHDNS_PID")
hz=$(getconf CLK_TCK)
echo "idle_cpu_percent_of_one_core=$(awk -v d=$((t1 - t0)) -v hz="$hz" -v s="$IDLE_SECS" 'BEGIN { printf "%.2f", 100 * d / hz / s }') ($CLUSTERS export streams)"

# Throughput: both servers run side by side (the idle one costs the
# other nothing but its heartbeats); rounds alternate so drift on a
# shared machine hits both; medians are compared.
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
: > "$DIR/small.qps"
: > "$DIR/big.qps"
for round in $(seq 1 "$ROUNDS"); do
  QUERIES=$DIR/small drive "$SMALL_PORT" "small-$round" >> "$DIR/small.qps"
  QUERIES=$DIR/big drive "$DNS_PORT" "big-$round" >> "$DIR/big.qps"
done
small_qps=$(median < "$DIR/small.qps")
big_qps=$(median < "$DIR/big.qps")
echo "qps_1000_endpoints=$small_qps (rounds: $(tr '\n' ' ' < "$DIR/small.qps"))"
echo "qps_${endpoints}_endpoints=$big_qps (rounds: $(tr '\n' ' ' < "$DIR/big.qps"))"
echo "throughput_ratio=$(awk -v b="$big_qps" -v s="$small_qps" 'BEGIN { printf "%.3f", b / s }')"

# Followers from scratch, alternating builds when FOLLOWER_BASE is set;
# the last one (this tree's) stays for the propagation run.
HUB_DNS_PORT=$DNS_PORT HUB_GRPC_PORT=$GRPC_PORT HUB_PID=$MESHDNS_PID HUB_ADMIN_PORT=$ADMIN_PORT
hub_kib=$(rss_kib "$HUB_PID")
builds=(new)
[ -n "${FOLLOWER_BASE:-}" ] && builds=(base new)
for round in $(seq 1 "$ROUNDS"); do
  for build in "${builds[@]}"; do
    bin=$BIN/meshdns
    [ "$build" = base ] && bin=$FOLLOWER_BASE
    NEXT_DNS_PORT=$FOLLOWER_DNS_PORT CORE=1 LABEL=follower-$build-$round MESHDNS_BIN=$bin \
      start_meshdns --max-answers 16 --follow "http://127.0.0.1:$HUB_GRPC_PORT"
    synced=$("$BIN/loadfleet" wait --registry "http://127.0.0.1:$GRPC_PORT" "${big[@]}" | awk '{ print $2 }')
    sleep 1
    kib=$(rss_kib "$MESHDNS_PID")
    peak=$(awk '/^VmHWM:/ { print $2 }' "/proc/$MESHDNS_PID/status")
    echo "follower ($build) round $round: from scratch to a complete mirror of $endpoints endpoints in ${synced} ms;" \
      "rss $((kib / 1024)) MiB (peak $((peak / 1024))), $((kib * 1024 / endpoints)) B/endpoint; hub $((hub_kib * 1024 / endpoints)) B/endpoint"
    if [ "$build" = new ] && [ "$round" = "$ROUNDS" ]; then
      FOLLOWER_PID=$MESHDNS_PID
    else
      kill "$MESHDNS_PID"
      wait "$MESHDNS_PID" 2>/dev/null || true
    fi
  done
done
DNS_PORT=$HUB_DNS_PORT GRPC_PORT=$HUB_GRPC_PORT MESHDNS_PID=$HUB_PID ADMIN_PORT=$HUB_ADMIN_PORT

kill -USR1 "$PUSH_PID"
for _ in $(seq 1 600); do
  grep -q '^propagation' "$DIR/big-push.out" && break
  sleep 0.2
done
grep '^propagation ' "$DIR/big-push.out" || { echo "benches: no propagation figures" >&2; cat "$DIR/big-push.log" >&2; exit 1; }
grep '^propagation_follower' "$DIR/big-push.out" || true
echo "registry_rss_after_churn_mib=$(( $(rss_kib "$MESHDNS_PID") / 1024 )) follower_rss_after_churn_mib=$(( $(rss_kib "$FOLLOWER_PID") / 1024 ))"
