#!/usr/bin/env bash
# Root key backends in one run: cluster intermediates signed per second
# through ca.Authority with the root key in memory, on disk, in SoftHSM2,
# in Vault Transit, and through the Vault PKI upstream (ratios to disk);
# then Vault PKI ours vs a direct vault/api sign-intermediate call. Needs
# softhsm2 and the cached Vault build (make tools).
# Usage: test/bench/backends.sh [benchtime]      (default 2s)
set -euo pipefail
cd "$(dirname "$0")/../.."
bt=${1:-2s}
out=$(go test -p 1 -run '^$' -benchtime "$bt" -bench 'BenchmarkIntermediate' ./test/bench/backends/ 2>&1)
echo "$out" | grep -E '^(Benchmark|ok|FAIL|---)'
echo
echo "$out" | awk '
  /^BenchmarkIntermediate\// { name = $1; sub(/^BenchmarkIntermediate\//, "", name); sub(/-[0-9]+$/, "", name); rate[name] = 1e9 / $3; order[++n] = name }
  END {
    printf "%-16s %16s %10s\n", "root key", "intermediates/s", "vs disk"
    for (i = 1; i <= n; i++) { k = order[i]; printf "%-16s %16.0f %9.0f%%\n", k, rate[k], 100 * rate[k] / rate["disk"] }
  }'
echo
out=$(go test -run '^$' -benchtime "$bt" -bench 'BenchmarkSignIntermediate' ./upstream/vaultpki/ 2>&1)
echo "$out" | grep -E '^(Benchmark|ok|FAIL)'
echo "$out" | awk '
  /^BenchmarkSignIntermediate\/meshroot/ { m = 1e9 / $3 }
  /^BenchmarkSignIntermediate\/vault-api/ { d = 1e9 / $3 }
  END { if (m && d) printf "Vault PKI: meshroot %.0f/s, direct vault/api %.0f/s: overhead %.0f%% (target <= 10%%)\n", m, d, 100 * (d - m) / d }'
