#!/usr/bin/env bash
# Mints this fleet's certificates (deploy/certs/mint.sh) and gives each
# overlay only what it needs:
#   hub/pki      server.crt, server.key, ca.crt
#   <member>/pki cluster-<member>.crt, .key, ca.crt   (never the CA key)
#                reader-edge-<member>.crt, .key      (its edge follower)
#   ca/          everything, the CA key and the `status` reader included:
#                keep it off the member clusters (git-ignored here)
# The server certificate names every address a syncer or an edge
# follower dials (meshdns.hub.example.internal resolves to every
# replica's gRPC load balancer)
# (MESHDNS_REGISTRY in the member overlays; CI checks they match) and the
# replicas' in-cluster names under the headless Service.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ca=$here/ca
bash "$here/../../certs/mint.sh" "$ca" \
  --server-name meshdns.hub.example.internal \
  --server-name meshdns-0.hub.example.internal \
  --server-name meshdns-1.hub.example.internal \
  --server-name meshdns-0.meshdns-headless.meshdns-system.svc \
  --server-name meshdns-1.meshdns-headless.meshdns-system.svc \
  --cluster east-1 --cluster west-1 --reader status \
  --reader edge-east-1 --reader edge-west-1
install -d -m 700 "$here/hub/pki" "$here/east-1/pki" "$here/west-1/pki"
install -m 600 "$ca/server.key" "$here/hub/pki/server.key"
install -m 644 "$ca/server.crt" "$ca/ca.crt" "$here/hub/pki/"
for member in east-1 west-1; do
  install -m 600 "$ca/cluster-$member.key" "$here/$member/pki/"
  install -m 644 "$ca/cluster-$member.crt" "$ca/ca.crt" "$here/$member/pki/"
  install -m 600 "$ca/reader-edge-$member.key" "$here/$member/pki/"
  install -m 644 "$ca/reader-edge-$member.crt" "$here/$member/pki/"
done
