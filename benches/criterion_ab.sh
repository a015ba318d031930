#!/usr/bin/env bash
# Same-run A/B of the answer-path criterion benches: this tree against a
# base tree (another checkout), each built with its own target directory,
# then run alternately (A, B, A, B, ...) so both see the same machine load.
#
#   benches/criterion_ab.sh BASE_TREE [ROUNDS]
#
# Environment: AB_TREE is the tree measured as "current" (default: this
# one; point it at an export of a commit to keep editing meanwhile);
# AB_TARGET (default target/ab-cur) and AB_BASE_TARGET
# (default target/ab-old) are the two target directories; AB_BENCHES is
# the criterion filter (default: the benches present in both trees);
# AB_MEASURE is criterion's --measurement-time in seconds (default 3).
# Prints one line per bench and round, then per bench the median and the
# best of the rounds for each build and their ratios (this tree over base;
# below 1 means this tree is faster). On a loaded machine the best of the
# rounds is the steadier figure.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
base=${1:?usage: benches/criterion_ab.sh BASE_TREE [ROUNDS]}
base=$(cd "$base" && pwd)
rounds=${2:-2}
cur_target=${AB_TARGET:-$here/target/ab-cur}
base_target=${AB_BASE_TARGET:-$here/target/ab-old}
filter=${AB_BENCHES:-'^(qname_parse|locality_lookup_1000_clusters|select_without_locality|select_with_locality|respond_unknown_asker|respond_located_asker|fast_path_unknown_asker|fast_path_located_asker|fast_path_nxdomain|delta_apply_one_service_1000_clusters)$'}
measure=${AB_MEASURE:-3}
out=${AB_OUT:-$here/target/criterion_ab}
mkdir -p "$out"

build() { # tree target -> path of the answer_path bench executable
  (cd "$1" && CARGO_TARGET_DIR=$2 cargo bench -p meshdns-benches --bench answer_path \
     --no-run --message-format=json 2>"$out/build-$(basename "$2").log") |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "answer_path" and m.get("executable"):
        print(m["executable"])'
}

cur_bin=$(build "${AB_TREE:-$here}" "$cur_target")
base_bin=$(build "$base" "$base_target")
echo "current: $cur_bin"
echo "base:    $base_bin"

run() { # label bin round
  mkdir -p "$out/$1"
  (cd "$out/$1" && "$2" --bench --warm-up-time 1 --measurement-time "$measure" --noplot "$filter") \
    >"$out/$1-$3.txt" 2>&1
  python3 - "$out/$1-$3.txt" "$1" "$3" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
for name, mid, unit in re.findall(r'^(\S+)\s*\n?\s*time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]', text, re.M):
    scale = {"ps": 1e-3, "ns": 1, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}[unit]
    print(f"{sys.argv[2]} round={sys.argv[3]} {name} {float(mid) * scale:.1f} ns")
PY
}

: >"$out/results.txt"
# Bench by bench, the two builds back to back, the order swapped every
# round: both see the same minute of a shared machine's load.
benches=$(echo "$filter" | tr -d '^()$' | tr '|' ' ')
for r in $(seq 1 "$rounds"); do
  for b in $benches; do
    if [ $((r % 2)) -eq 1 ]; then order="current base"; else order="base current"; fi
    for label in $order; do
      if [ "$label" = current ]; then bin=$cur_bin; else bin=$base_bin; fi
      filter="^$b\$" run "$label" "$bin" "$r-$b" | tee -a "$out/results.txt"
    done
  done
done

python3 - "$out/results.txt" <<'PY'
import collections, statistics, sys
t = collections.defaultdict(lambda: collections.defaultdict(list))
for line in open(sys.argv[1]):
    label, _, name, ns, _ = line.split()
    t[name][label].append(float(ns))
print(f"{'bench':40} {'current ns':>11} {'base ns':>11} {'ratio':>6} {'best cur':>11} {'best base':>11} {'ratio':>6}")
for name, v in t.items():
    if v["current"] and v["base"]:
        c, b = statistics.median(v["current"]), statistics.median(v["base"])
        bc, bb = min(v["current"]), min(v["base"])
        print(f"{name:40} {c:11.1f} {b:11.1f} {c / b:6.2f} {bc:11.1f} {bb:11.1f} {bc / bb:6.2f}")
PY
