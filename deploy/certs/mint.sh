#!/usr/bin/env bash
# Mints a CA and certificates for a meshdns fleet with openssl:
#   ca.crt/ca.key                 the fleet CA (give ca.crt to everyone)
#   server.crt/server.key         the registry (meshdns serve --tls-cert/--tls-key)
#   cluster-<name>.crt/.key       one per cluster, URI SAN spiffe://<trust-domain>/cluster/<name>
#   reader-<name>.crt/.key        read-only clients (followers, meshdns status),
#                                 URI SAN spiffe://<trust-domain>/reader/<name>
#
# Usage:
#   deploy/certs/mint.sh OUTDIR [--trust-domain meshdns] [--server-name NAME]...
#                        [--server-ip IP]... [--cluster NAME]... [--reader NAME]...
# Defaults: --server-name localhost --server-ip 127.0.0.1. For a test fleet;
# in production use your PKI (cert-manager, SPIRE) with the same SAN shapes.
set -euo pipefail

usage() { sed -n '2,16p' "$0" >&2; exit 2; }
[ $# -ge 1 ] || usage
out=$1; shift
trust_domain=meshdns
names=(); ips=(); clusters=(); readers=()
while [ $# -gt 0 ]; do
  case "$1" in
    --trust-domain) trust_domain=$2; shift 2 ;;
    --server-name) names+=("$2"); shift 2 ;;
    --server-ip) ips+=("$2"); shift 2 ;;
    --cluster) clusters+=("$2"); shift 2 ;;
    --reader) readers+=("$2"); shift 2 ;;
    *) echo "mint.sh: unknown argument $1" >&2; usage ;;
  esac
done
[ ${#names[@]} -gt 0 ] || names=(localhost)
[ ${#ips[@]} -gt 0 ] || ips=(127.0.0.1)

mkdir -p "$out"
cd "$out"
umask 077

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

if [ ! -f ca.key ]; then
  key ca.key
  openssl req -x509 -new -key ca.key -out ca.crt -days 3650 -subj "/CN=meshdns fleet CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi

# leaf NAME SAN USAGE
leaf() {
  key "$1.key"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$1" 2>/dev/null
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=%s\n' "$3" "$2" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 825 -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

san=""
for n in "${names[@]}"; do san="${san:+$san,}DNS:$n"; done
for i in "${ips[@]}"; do san="${san:+$san,}IP:$i"; done
leaf server "$san" serverAuth
for c in "${clusters[@]}"; do leaf "cluster-$c" "URI:spiffe://$trust_domain/cluster/$c" clientAuth; done
for r in "${readers[@]}"; do leaf "reader-$r" "URI:spiffe://$trust_domain/reader/$r" clientAuth; done
chmod 644 ./*.crt
echo "minted in $out: ca, server (${san}), clusters: ${clusters[*]:-none}, readers: ${readers[*]:-none}"
