#!/usr/bin/env bash
# The quick-start demo behind `make run`: a root for example.org and cacerts
# for two clusters, east and west, under ./out. Safe to run again: it reuses
# the root and clusters and issues fresh intermediates.
set -euo pipefail
bin=${MESHROOT_BIN:-bin/meshroot}
out=${OUT:-out}
mkdir -p "$out"
chmod 700 "$out"
export MESHROOT_DATA_DIR="$out/data"
pass="$out/passphrase"
if [ ! -s "$pass" ]; then
  (umask 077 && head -c 24 /dev/urandom | base64 > "$pass")
fi
m() { "$bin" --passphrase-file "$pass" "$@"; }

if ! m root list -o json | grep -q '"state": "active"'; then
  m root init --trust-domain example.org
fi
for c in east west; do
  m cluster list -o json | grep -q "\"name\": \"$c\"" || m cluster add "$c"
  m intermediate issue --cluster "$c" --out "$out/$c" --ttl 720h
done
echo
echo "cacerts for two clusters, all under one root:"
for c in east west; do
  ls -l "$out/$c"
  if command -v openssl >/dev/null; then
    openssl verify -CAfile "$out/$c/root-cert.pem" -untrusted "$out/$c/cert-chain.pem" "$out/$c/ca-cert.pem"
  fi
done
echo
echo "Load one into a cluster:  kubectl create secret generic cacerts -n istio-system --from-file=$out/east/"
echo "Or print it as a Secret:  $bin --data-dir $out/data --passphrase-file $pass intermediate issue --cluster east -o yaml"
echo "Audit log:                $bin --data-dir $out/data audit list"
