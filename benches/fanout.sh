#!/usr/bin/env bash
# Watch fan-out: the hub serving a fleet of edge followers under churn
# (benches/src/bin/fanout.rs; figures in benches/README.md).
#
#   benches/fanout.sh           # release build, 1,000 followers
#   benches/fanout.sh --smoke   # debug build, 50 followers, 10 changes
#
# One hub process; a syncer publisher per cluster in the bench process; in
# one run: the hub with no followers, then with 1,000 in-process Watch
# clients (each its own connection), 10 that never read, and 3 real
# `meshdns serve --follow` edges; then the same clients behind 4 regional
# followers. Prints propagation (to each client, to the last client, to
# the last edge's DNS answer), the hub's CPU and memory per follower, its
# DNS rate with and without followers, and the Watch messages' sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=release
ARGS=()
if [ "${1:-}" = "--smoke" ]; then
  PROFILE=debug
  ARGS=(--followers 50 --stalled 2 --edges 1 --regional 2 --changes 10 --services 100)
fi
if [ "$PROFILE" = release ]; then
  cargo build --release --locked -p meshdns -p meshdns-benches --bin meshdns --bin fanout
else
  cargo build --locked -p meshdns -p meshdns-benches --bin meshdns --bin fanout
fi
BIN=${CARGO_TARGET_DIR:-target}/$PROFILE
"$BIN/fanout" --meshdns "$BIN/meshdns" "${ARGS[@]}"
