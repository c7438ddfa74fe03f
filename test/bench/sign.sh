#!/usr/bin/env bash
# Intermediate signing: meshroot's SignIntermediate vs the raw
# x509.CreateCertificate of the same template, and vs that plus the CSR
# signature check every CA must do, measured in one run.
# Usage: test/bench/sign.sh [benchtime] [count]     (defaults: 2s, 3)
set -euo pipefail
cd "$(dirname "$0")/../.."
benchtime=${1:-2s}
count=${2:-3}
out=$(go test -run '^$' -bench 'BenchmarkSignIntermediate' -benchtime "$benchtime" -count "$count" ./ca/)
echo "$out" | grep -E '^(Benchmark|cpu:|goos|goarch)'
echo
echo "$out" | awk '
  /^BenchmarkSignIntermediate\// {
    split($1, p, "/"); root = p[2]; kind = p[3]; sub(/-[0-9]+$/, "", kind)
    sum[root, kind] += $3; n[root, kind]++; roots[root] = 1
  }
  END {
    printf "%-16s %12s %12s %12s %14s %14s\n", "root", "meshroot/s", "raw/s", "raw+csr/s", "vs raw", "vs raw+csr"
    for (r in roots) {
      m = sum[r, "meshroot"] / n[r, "meshroot"]; w = sum[r, "raw"] / n[r, "raw"]
      c = sum[r, "raw+csrcheck"] / n[r, "raw+csrcheck"]
      printf "%-16s %12.0f %12.0f %12.0f %13.0f%% %13.0f%%\n", r, 1e9 / m, 1e9 / w, 1e9 / c, 100 * w / m, 100 * c / m
    }
  }'
