#!/usr/bin/env bash
# Root key backends in one run: P-256 signatures per second through each
# backend (in-memory key as the ceiling, SoftHSM2 over PKCS#11, Vault
# Transit) and cluster intermediates per second through Vault PKI, ours vs
# a direct vault/api sign-intermediate call. Needs softhsm2 and the cached
# Vault build (make tools).
# Usage: test/bench/backends.sh [benchtime]      (default 2s)
set -euo pipefail
cd "$(dirname "$0")/../.."
bt=${1:-2s}
out=$(go test -p 1 -run '^$' -benchtime "$bt" \
  -bench 'BenchmarkSignIntermediate/root=ec-p256/raw$|BenchmarkSignP256|BenchmarkSoftKMSSignP256|BenchmarkSignIntermediate' \
  ./ca/ ./plugins/keymanager/pkcs11/ ./plugins/keymanager/kms/ ./plugins/keymanager/vaulttransit/ ./plugins/upstream/vaultpki/ 2>&1)
echo "$out" | grep -E '^(Benchmark|pkg:|ok|FAIL)'
echo
echo "$out" | awk '
  /^pkg:/ { pkg = $2; sub(/.*meshroot\//, "", pkg) }
  /^Benchmark/ { name = $1; sub(/-[0-9]+$/, "", name); rate[pkg " " name] = 1e9 / $3; order[++n] = pkg " " name }
  END {
    base = rate["ca BenchmarkSignIntermediate/root=ec-p256/raw"]
    printf "%-80s %12s %10s\n", "benchmark", "ops/s", "vs memory"
    for (i = 1; i <= n; i++) { k = order[i]; printf "%-80s %12.0f %9.1f%%\n", k, rate[k], base ? 100 * rate[k] / base : 0 }
  }'
