#!/usr/bin/env bash
# Where the hub's memory is after a reconnect storm, by owner:
#
#   [LOADFLEET=BIN] benches/heaptrack_storm.sh [MESHDNS_BIN]
#
# Runs `meshdns serve` under heaptrack (pinned to core 0), lets `loadfleet
# push --zone-node` (core 1) connect 1,000 publishers at once (1,000
# clusters x 100 services x 10 endpoints, a zone and a node on every
# endpoint), waits 5 s after every answer is complete, then SIGKILLs the
# hub: heaptrack's "leaked" bytes are then what was live after the storm,
# and its peak what the storm needed at most. Prints both, grouped by owner
# (benches/heap_owners.py). heaptrack sees only the system allocator, so
# MESHDNS_BIN defaults to a build with `--features system-allocator`
# (made here, in its own target directory). Needs heaptrack (Debian).
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTERS=${CLUSTERS:-1000}
command -v heaptrack >/dev/null || { echo "heaptrack_storm: install heaptrack" >&2; exit 1; }
target=${CARGO_TARGET_DIR:-target}
bin=${1:-}
if [ -z "$bin" ]; then
  cargo build --release --locked -p meshdns --bin meshdns --features system-allocator --target-dir "$target/heap"
  bin=$target/heap/release/meshdns
fi
# LOADFLEET: a built loadfleet (any build: it only drives the storm).
loadfleet=${LOADFLEET:-}
if [ -z "$loadfleet" ]; then
  cargo build --release --locked -p meshdns-benches --bin loadfleet
  loadfleet=$target/release/loadfleet
fi
dir=$(mktemp -d /tmp/meshdns-heap.XXXXXX)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
dns=$(port); grpc=$(port); admin=$(port)
taskset -c 0 heaptrack -o "$dir/hub" "$bin" serve --insecure --workers 1 \
  --dns-listen "127.0.0.1:$dns" --grpc-listen "127.0.0.1:$grpc" \
  --admin-listen "127.0.0.1:$admin" --max-answers 16 > "$dir/hub.log" 2>&1 &
heaptrack_pid=$!
hub=
for _ in $(seq 1 100); do
  hub=$(pgrep -P "$heaptrack_pid" -x meshdns || true)
  [ -n "$hub" ] && break
  sleep 0.1
done
[ -n "$hub" ] || { echo "heaptrack_storm: the hub did not start" >&2; cat "$dir/hub.log" >&2; exit 1; }
sleep 2
taskset -c 1 "$loadfleet" push --registry "http://127.0.0.1:$grpc" --dns "127.0.0.1:$dns" \
  --clusters "$CLUSTERS" --services 100 --spread "$CLUSTERS" --endpoints 10 --zone-node \
  > "$dir/push.out" 2> "$dir/push.log" &
push=$!
for _ in $(seq 1 3000); do grep -q '^ready' "$dir/push.out" && break; sleep 0.2; done
sleep 5
echo "storm $(awk '/^ready/ { print $2 }' "$dir/push.out") ms; hub RSS under heaptrack $(awk '/^VmRSS:/ { print $2 }' "/proc/$hub/status") KiB"
kill -9 "$hub"
kill "$push" 2>/dev/null || true
wait "$push" 2>/dev/null || true
wait "$heaptrack_pid" 2>/dev/null || true
shopt -s nullglob
files=("$dir"/hub*.zst "$dir"/hub*.gz)
[ ${#files[@]} -gt 0 ] || { echo "heaptrack_storm: no heaptrack data in $dir" >&2; exit 1; }
data=${files[0]}
endpoints=$((CLUSTERS * 1000))
for cost in leaked peak; do
  heaptrack_print -f "$data" --flamegraph-cost-type "$cost" -F "$dir/$cost.txt" > /dev/null
  case $cost in
    leaked) echo "live after the storm:" ;;
    peak) echo "at the heap's peak:" ;;
  esac
  python3 benches/heap_owners.py "$dir/$cost.txt" "$endpoints"
done
echo "data: $data"
