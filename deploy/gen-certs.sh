#!/usr/bin/env bash
# Makes a small private PKI for fleetpmu with the openssl CLI: a CA, a server certificate and
# one client certificate per agent, whose CN and DNS name are the agent's host_id (the server
# derives host_id from it, docs/server.md "Security"). For demos, tests and first deployments;
# a fleet with its own CA issues the same shapes of certificates from it (docs/deploy.md).
#
# Usage: deploy/gen-certs.sh <dir> --server-name NAME [--server-name NAME ...] [--agent HOST ...]
#        [--days N]
#   <dir>/ca.pem, ca.key               the CA (keep ca.key off the hosts)
#   <dir>/server.pem, server.key       serverAuth, SANs: every --server-name (IPs become IP SANs)
#   <dir>/<HOST>.pem, <HOST>.key       clientAuth for each --agent HOST
# Existing files are kept, so re-running adds agents without re-issuing the rest.
set -euo pipefail

usage() { sed -n '2,13p' "$0"; }
[[ $# -ge 1 ]] || { usage >&2; exit 2; }
case "$1" in -h|--help) usage; exit 0 ;; esac
dir=$1; shift
server_names=(); agents=(); days=30
while [[ $# -gt 0 ]]; do
  case "$1" in
    --server-name) server_names+=("${2:?--server-name needs a value}"); shift 2 ;;
    --agent) agents+=("${2:?--agent needs a host id}"); shift 2 ;;
    --days) days=${2:?--days needs a number}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gen-certs: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ ${#server_names[@]} -gt 0 ]] || { echo "gen-certs: at least one --server-name is needed" >&2; exit 2; }
[[ "$days" =~ ^[0-9]+$ && "$days" -gt 0 ]] || { echo "gen-certs: --days must be a positive number, got '$days'" >&2; exit 2; }
for a in "${agents[@]}"; do
  [[ "$a" =~ ^[A-Za-z0-9._-]{1,128}$ ]] || { echo "gen-certs: '$a' is not a valid host_id ([A-Za-z0-9._-], 1..128)" >&2; exit 2; }
done
command -v openssl > /dev/null || { echo "gen-certs: openssl is not installed" >&2; exit 1; }

mkdir -p "$dir"
umask 077
log="$dir/openssl.log"
ssl() { openssl "$@" >> "$log" 2>&1 || { echo "gen-certs: openssl $1 failed, see $log" >&2; exit 1; }; }
newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)

if [[ ! -f "$dir/ca.pem" ]]; then
  ssl req -x509 "${newkey[@]}" -keyout "$dir/ca.key" -out "$dir/ca.pem" -days "$days" -subj "/CN=fleetpmu CA"
fi
issue() {  # issue <file stem> <CN> <extendedKeyUsage> <subjectAltName>
  [[ -f "$dir/$1.pem" ]] && return 0
  printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$4" "$3" > "$dir/$1.ext"
  ssl req "${newkey[@]}" -keyout "$dir/$1.key" -out "$dir/$1.csr" -subj "/CN=$2"
  ssl x509 -req -in "$dir/$1.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -out "$dir/$1.pem" -days "$days" -extfile "$dir/$1.ext"
  rm -f "$dir/$1.csr" "$dir/$1.ext"
}
sans=()
for n in "${server_names[@]}"; do
  if [[ "$n" =~ ^[0-9.]+$ || "$n" == *:* ]]; then sans+=("IP:$n"); else sans+=("DNS:$n"); fi
done
issue server "${server_names[0]}" serverAuth "$(IFS=,; echo "${sans[*]}")"
for a in "${agents[@]}"; do issue "$a" "$a" clientAuth "DNS:$a"; done
chmod 644 "$dir"/*.pem
echo "gen-certs: CA, server (${server_names[*]}) and ${#agents[@]} agent certificate(s) in $dir"
