#!/bin/bash
# A hub given a small fleet file that is then replaced by a 300 MB one
# (valid YAML, mostly comments): its peak RSS and CPU over the next 15 s.
# usage: benches/fleet_file_swap.sh BINARY LABEL
# Hold the bench lock: flock /work/prompts/bench.lock benches/fleet_file_swap.sh ...
set -eu
BIN=$1; LABEL=$2
D=$(mktemp -d "/tmp/fleet-swap-$LABEL.XXXX")
python3 - "$D/big.yaml" <<'PY'
import sys
line = '# ' + 'x' * 76 + '\n'
with open(sys.argv[1], 'w') as f:
    f.write('clusters:\n  east-1:\n  west-1:\n')
    f.write(line * (300 * 1024 * 1024 // len(line)))
PY
printf 'clusters:\n  east-1:\n' > "$D/clusters.yaml"
"$BIN" serve --insecure --workers 1 --dns-listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 \
    --admin-listen 127.0.0.1:0 --clusters "$D/clusters.yaml" > /dev/null 2> "$D/hub.log" &
PID=$!
sleep 3
rss() { awk '/VmRSS/{print $2}' /proc/$PID/status; }
cpu() { awk '{print $14+$15}' /proc/$PID/stat; }
echo "$LABEL before: rss_kib=$(rss)"
mv "$D/big.yaml" "$D/clusters.yaml"
c0=$(cpu); max=0
for _ in $(seq 1 30); do sleep 0.5; r=$(rss); [ "$r" -gt "$max" ] && max=$r; done
c1=$(cpu)
echo "$LABEL after 15 s: peak_rss_kib=$max cpu_ticks=$((c1 - c0)) (100 a second)"
grep -E "fleet file (rejected|reloaded)" "$D/hub.log" | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-220 | head -3
kill "$PID"; wait "$PID" 2>/dev/null || true
rm -rf "$D"
