#!/usr/bin/env bash
# A small private CA and the certificates of a first parawatt deployment, made with openssl.
#
#   deploy/make-certs.sh OUTDIR NAME [NAME...]
#
# NAMEs are the host names and IP addresses the daemons are reached at (they go into the daemon
# certificate's subjectAltName; 127.0.0.1, ::1 and localhost are always added). Writes into OUTDIR:
#   ca.crt ca.key              the CA (keep ca.key offline; ca.crt goes to every daemon and collector)
#   daemon.crt daemon.key      server certificate for every power daemon (--tls-cert/--tls-key)
#   collector.crt collector.key  client certificate of the collector (mutual TLS)
#   client.crt client.key      client certificate for probes, sweeps, trainers over TCP
#   metrics.crt metrics.key    server certificate for /metrics (web config tls_server_config)
# Keys are mode 0640: give the group of the service that reads them (e.g. chgrp parawatt).
# An existing CA in OUTDIR is reused, so new hosts can be added by running it again.
# Certificates are valid for DAYS days (default 825). EC P-256 keys: small and fast handshakes.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 OUTDIR NAME [NAME...]   (NAME: host name or IP address of a daemon)" >&2
  exit 2
fi
out=$1; shift
days=${DAYS:-825}
umask 027
mkdir -p "$out"
cd "$out"

san="DNS:localhost,IP:127.0.0.1,IP:::1"
for name in "$@"; do
  if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then san+=",IP:$name"; else san+=",DNS:$name"; fi
done

newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

if [ ! -f ca.key ] || [ ! -f ca.crt ]; then
  newkey ca.key
  openssl req -x509 -new -key ca.key -sha256 -days "$days" -subj "/CN=parawatt CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.crt
fi

# sign NAME CN EXTENDED_KEY_USAGE [SAN]
sign() {
  local name=$1 cn=$2 eku=$3 alt=${4:-}
  local ext; ext=$(mktemp)
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [ -n "$alt" ] && echo "subjectAltName=$alt"
  } > "$ext"
  newkey "$name.key"
  openssl req -new -key "$name.key" -subj "/CN=$cn" -out "$name.csr"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 \
    -days "$days" -extfile "$ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$ext"
}

sign daemon "parawatt power daemon" serverAuth "$san"
sign metrics "parawatt metrics" serverAuth "$san"
sign collector "parawatt collector" clientAuth
sign client "parawatt client" clientAuth
chmod 0640 ./*.key && chmod 0600 ca.key
chmod 0644 ./*.crt
echo "certificates in $PWD (daemon SANs: $san)"
