# Shared by benches/load.sh and benches/scale.sh: tools, build, ports,
# process cleanup and the dnsperf driver. Expects SECS, PROFILE, CLIENTS.

need() {
  local missing=()
  [ -x /usr/sbin/knotd ] || command -v knotd >/dev/null 2>&1 || missing+=(knot)
  command -v dnsperf >/dev/null 2>&1 || missing+=(dnsperf)
  command -v dig >/dev/null 2>&1 || missing+=(bind9-dnsutils)
  command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "benches: installing ${missing[*]}" >&2
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      echo "benches: missing ${missing[*]} (Debian packages); install them and run again" >&2
      exit 1
    fi
  fi
}
need
KNOTD=$(command -v knotd || echo /usr/sbin/knotd)

if [ "$PROFILE" = release ]; then
  cargo build --release --locked -p meshdns -p meshdns-benches --bin meshdns --bin loadfleet --bin capacity
else
  cargo build --locked -p meshdns -p meshdns-benches --bin meshdns --bin loadfleet --bin capacity
fi
BIN=${CARGO_TARGET_DIR:-target}/$PROFILE

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

DIR=$(mktemp -d /tmp/meshdns-load.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$DIR"
}
trap cleanup EXIT

wait_answers() { # port
  for _ in $(seq 1 300); do
    if dig +short +time=1 +tries=1 @127.0.0.1 -p "$1" ${PROBE:-svc-1.ns-1.global} A 2>/dev/null | grep -q '^10\.'; then
      return 0
    fi
    sleep 0.2
  done
  echo "load.sh: no answer on port $1" >&2
  return 1
}

# dnsperf from every client at once; prints the summed queries/s.
# Args: port label [max qps per client, 0 = unlimited] [verbose]. The
# query files are those listed in $QUERIES/clients.txt (default $DIR);
# MODE=tcp asks over TCP (dnsperf -m).
drive() {
  local port=$1 label=$2 limit=${3:-0} verbose=${4:-}
  local pids=() k=0 files=${QUERIES:-$DIR}
  while read -r file addr _; do
    local args=(-s 127.0.0.1 -p "$port" -a "$addr" -d "$files/$file" -l "$SECS" -c 4 -q 50 -T 1 -t 2)
    [ "$limit" -gt 0 ] && args+=(-Q "$limit")
    [ -n "$verbose" ] && args+=(-v)
    [ -n "${MODE:-}" ] && args+=(-m "$MODE")
    taskset -c 1 dnsperf "${args[@]}" > "$DIR/$label-$k.out" 2>&1 &
    pids+=($!)
    k=$((k + 1))
  done < "$files/clients.txt"
  for pid in "${pids[@]}"; do wait "$pid"; done
  cat "$DIR/$label"-*.out | awk '/Queries per second:/ { q += $4 } END { printf "%.0f\n", q }'
}

# p50 and p99 latency (ms) of the verbose run `label`.
latency() {
  cat "$DIR/$1"-*.out | awk '$1 == ">" && $NF ~ /^[0-9.]+$/ { print $NF * 1000 }' | sort -n |
    awk '{ v[NR] = $1 } END { if (NR == 0) { print "none"; exit } printf "p50=%.3fms p99=%.3fms n=%d\n", v[int(NR * 0.50) + 1], v[int(NR * 0.99) + 1], NR }'
}

# Starts `meshdns serve` (one UDP worker) pinned to core 0 (CORE), with
# any extra flags; sets DNS_PORT (NEXT_DNS_PORT if set), GRPC_PORT,
# ADMIN_PORT, MESHDNS_PID. LABEL names its files (default meshdns);
# MESHDNS_BIN runs another build (a same-run reference).
start_meshdns() {
  DNS_PORT=${NEXT_DNS_PORT:-$(free_port)}
  GRPC_PORT=$(free_port)
  ADMIN_PORT=$(free_port)
  taskset -c "${CORE:-0}" "${MESHDNS_BIN:-$BIN/meshdns}" serve --insecure --workers 1 \
    --dns-listen "127.0.0.1:$DNS_PORT" --grpc-listen "127.0.0.1:$GRPC_PORT" \
    --admin-listen "127.0.0.1:$ADMIN_PORT" "$@" > "$DIR/${LABEL:-meshdns}.log" 2>&1 &
  MESHDNS_PID=$!
  PIDS+=("$MESHDNS_PID")
}

# Streams a fleet (loadfleet push, extra shape flags) from core 1 and
# waits until the registry holds all of it; sets PUSH_PID.
push_fleet() {
  taskset -c 1 "$BIN/loadfleet" push --registry "http://127.0.0.1:$GRPC_PORT" \
    --dns "127.0.0.1:$DNS_PORT" "$@" > "$DIR/${LABEL:-meshdns}-push.out" 2> "$DIR/${LABEL:-meshdns}-push.log" &
  PUSH_PID=$!
  PIDS+=("$PUSH_PID")
  for _ in $(seq 1 3000); do
    grep -q '^ready' "$DIR/${LABEL:-meshdns}-push.out" && return 0
    kill -0 "$PUSH_PID" 2>/dev/null || break
    sleep 0.2
  done
  echo "benches: the fleet never finished loading" >&2
  cat "$DIR/${LABEL:-meshdns}-push.log" >&2
  exit 1
}

# Resident memory of a process, KiB.
rss_kib() {
  awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# CPU time (user + system) of a process, in clock ticks.
cpu_ticks() {
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}
