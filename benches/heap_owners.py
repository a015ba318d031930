#!/usr/bin/env python3
"""A heaptrack flame-graph file (heaptrack_print -F, any cost type) summed
by owner: each stack goes to the first owner one of whose frames it holds.

    heap_owners.py STACKS.txt [ENDPOINTS]

Prints a Markdown table: owner, MB, bytes per endpoint (ENDPOINTS,
default 1,000,000). Used by benches/heaptrack_storm.sh."""

import collections
import sys

# (owner, frame substrings), first match wins: the registry's apply before
# the views it publishes, the views' named builders before the rest.
OWNERS = [
    ("registry: exports map, Arc<ServiceExport>", ["apply_snapshot_in"]),
    ("views: chunk runs (ChunkMeta::seal)", ["ChunkMeta::seal", "ChunkMeta4seal"]),
    ("views: parts (ClusterView::build)", ["ClusterView::build", "ClusterView5build"]),
    # Gone since the ninth session (a part's zone runs are no longer copied):
    # kept to read older builds.
    ("views: chunk zone runs copied (chunk::keep)", ["chunk::keep", "chunk4keep"]),
    ("views: other (Arc<ClusterView>, metas, chains)", ["ServiceView::update_in", "ServiceView9update_in", "meshdns::snapshot"]),
    ("tonic decode buffers (Streaming)", ["tonic::codec::decode"]),
    ("gRPC per connection (h2, hyper, stream tasks)", ["h2::", "hyper::"]),
    ("model: ServiceExport (convert)", ["meshdns_proto::convert", "meshdns_proto..convert"]),
    ("imports view", ["registry::imports", "registry..imports"]),
    ("registry: other", ["meshdns::registry", "meshdns..registry"]),
    ("ingest: Export framing, per stream", ["meshdns::ingest", "meshdns..ingest"]),
    ("tokio runtime", ["tokio::"]),
]


def main():
    path = sys.argv[1]
    endpoints = float(sys.argv[2]) if len(sys.argv) > 2 else 1e6
    totals = collections.Counter()
    for line in open(path):
        stack, _, cost = line.rstrip("\n").rpartition(" ")
        owner = next((o for o, frames in OWNERS if any(f in stack for f in frames)), "other")
        totals[owner] += int(cost)
    total = sum(totals.values())
    print("| owner | MB | B/endpoint |")
    print("| --- | --- | --- |")
    for owner in [o for o, _ in OWNERS] + ["other"]:
        print(f"| {owner} | {totals[owner] / 1e6:.1f} | {totals[owner] / endpoints:.0f} |")
    print(f"| **total** | **{total / 1e6:.1f}** | **{total / endpoints:.0f}** |")


if __name__ == "__main__":
    main()
