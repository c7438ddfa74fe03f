#!/usr/bin/env bash
# SPIFFE bundle endpoint: meshroot's (https_web) vs SPIRE's (https_web), the
# same wrk load on each in one run, on 127.0.0.1; and meshroot-bundle, the
# edge relay of meshroot's endpoint (https_web, holding no CA key), as a
# third server under the same load.
#
# Usage: test/bench/bundle-endpoint.sh [duration] [connections] [threads]
#        (defaults: 10s 32 2, i.e. wrk -t2 -c32 -d10s --latency, keep-alive)
# Env:   SPIRE_SERVER_BIN  spire-server to use (default: test/tools/build.sh spire)
#        WARMUP            warm-up per server before measuring (default 2s)
#
# Prints requests/s, p50, p99, the server's CPU seconds during the run (from
# /proc/PID/stat utime+stime), CPU per 1k requests and memory for both: RSS
# idle (/proc/PID/status VmRSS once both serve, before any load; with its
# file-backed part, the mapped binary, and its anonymous part, the heap),
# and the peak RSS under load (VmRSS sampled every 0.2 s during the measured
# wrk run). Then the ratios meshroot/SPIRE against the targets: requests/s
# >= 3 and RSS under load <= 1/4. Both binaries start with their pages out
# of the page cache (dd iflag=nocache), as on a node that just pulled them:
# a binary that was just written stays in the cache in large folios, which
# a newer kernel maps whole, and its RSS then counts nearly all of its text.
# wrk shares the 2 cores with the server under test: compare the ratio, not
# the absolute figures. wrk's own CPU per request is then part of every
# request's cost, which caps the ratio of rates; so that the servers'
# capacity shows too, each server is measured a second time pinned to one
# core with wrk pinned to the other (taskset; PINNED=0 skips it, and it is
# skipped on a machine with fewer than 2 cores). Exits non-zero only when
# a server fails to start or wrk fails, not when a target is missed.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
duration=${1:-10s}
conns=${2:-32}
threads=${3:-2}
warmup=${WARMUP:-2s}
pinned=${PINNED:-1}
[ "$(nproc)" -ge 2 ] || pinned=0
wrk_cpu=()
target=3
rss_target=0.25

pids=()
work=$(mktemp -d /tmp/mr-bench.XXXXXX)
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ]; then
    for f in "$work"/*.log; do
      [ -f "$f" ] || continue
      echo "---- $(basename "$f") (last 30 lines) ----" >&2
      tail -n 30 "$f" >&2
    done
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() { echo "bundle-endpoint bench: $*" >&2; exit 1; }

if ! command -v wrk >/dev/null; then
  echo "installing wrk" >&2
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  fi
fi
for c in wrk openssl curl; do command -v "$c" >/dev/null || die "$c is needed"; done

# free_port prints a loopback port nothing listens on (SPIRE's ports must be
# known before it starts).
free_port() {
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 30000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  die "no free port"
}

# wait_https URL NAME PID: until URL answers 200 (the CA is not checked here).
wait_https() {
  for _ in $(seq 150); do
    kill -0 "$3" 2>/dev/null || die "$2 exited; see its log above"
    if [ "$(curl -sk -o /dev/null -w '%{http_code}' "$1" || true)" = 200 ]; then return; fi
    sleep 0.2
  done
  die "$2 does not serve its bundle at $1"
}

# endpoint_addr LOG MSG PID NAME: the bundle_endpoint address of the JSON
# start line MSG that the process PID writes to LOG (10 s at most).
endpoint_addr() {
  local addr
  for _ in $(seq 100); do
    addr=$(sed -n "s/.*\"msg\":\"$2\".*\"bundle_endpoint\":\"\([^\"]*\)\".*/\1/p" "$1")
    [ -n "$addr" ] && { echo "$addr"; return; }
    kill -0 "$3" 2>/dev/null || die "$4 exited"
    sleep 0.1
  done
  die "$4 printed no start line"
}

# cpu_ticks PID: utime+stime in clock ticks (fields 14 and 15 of
# /proc/PID/stat, counted after the parenthesised command name).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
rss_mib() { awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
# rss_parts PID: "file anon" RSS in MiB (RssFile includes the mapped binary).
rss_parts() { awk '/^RssFile:/ {f = $2} /^RssAnon:/ {a = $2} END {printf "%.1f %.1f", f / 1024, a / 1024}' "/proc/$1/status"; }
# sample_rss PID OUT: the highest VmRSS in MiB, every 0.2 s, into OUT until killed.
sample_rss() {
  local max=0 v
  while v=$(awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null); do
    if [ "${v:-0}" -gt "$max" ]; then max=$v; echo "$max" >"$2"; fi
    sleep 0.2
  done
}

# to_ms VALUE: wrk latency (850.00us, 1.20ms, 1.01s) in milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n *= 1; else if (v ~ /m$/) n *= 60000; else if (v ~ /s$/) n *= 1000
    printf "%.3f", n
  }'
}

# Certificates: a test CA and one server certificate (IP 127.0.0.1) each.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj "/CN=meshroot bench CA" -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
for n in meshroot relay spire; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$n bundle endpoint" \
    -keyout "$work/$n.key" -out "$work/$n.csr" 2>/dev/null
  openssl x509 -req -in "$work/$n.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial -days 1 \
    -extfile <(printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n') \
    -out "$work/$n.pem" 2>/dev/null
done

# SPIRE.
spire=${SPIRE_SERVER_BIN:-}
if [ -z "$spire" ]; then
  spire="$(test/tools/build.sh spire | tail -n 1)/spire-v1.13.3/spire-server"
fi
[ -x "$spire" ] || die "no spire-server at $spire"

echo "building meshroot (as make build does)" >&2
go build -trimpath -tags grpcnotrace -ldflags "-s -w" -o "$work/meshroot" ./cmd/meshroot
go build -trimpath -tags grpcnotrace -ldflags "-s -w" -o "$work/meshroot-bundle" ./cmd/meshroot-bundle
# Start all from a cold page cache (see above).
sync "$work/meshroot" "$work/meshroot-bundle"
for b in "$work/meshroot" "$work/meshroot-bundle" "$spire"; do dd if="$b" iflag=nocache count=0 status=none; done

# meshroot: https_web bundle endpoint, a root for meshroot.test.
sock=$work/mr.sock
printf 'refreshHint: 5m\n' >"$work/meshroot.yaml"
"$work/meshroot" serve --data-dir "$work/mr-data" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
  --socket "$sock" --insecure-plaintext-key --trust-domain meshroot.test \
  --bundle-endpoint-listen 127.0.0.1:0 --bundle-endpoint-profile https_web \
  --bundle-endpoint-cert "$work/meshroot.pem" --bundle-endpoint-key "$work/meshroot.key" \
  --config "$work/meshroot.yaml" >"$work/meshroot.log" 2>&1 &
mr_pid=$!
pids+=("$mr_pid")
mr_addr=$(endpoint_addr "$work/meshroot.log" "meshroot server starting" "$mr_pid" "meshroot serve")
"$work/meshroot" --socket "$sock" root init --trust-domain meshroot.test >/dev/null
mr_url="https://$mr_addr/"

# SPIRE: https_web bundle endpoint with the same kind of certificate.
sp_port=$(free_port)
cat >"$work/spire.conf" <<EOF
server {
  bind_address = "127.0.0.1"
  bind_port = "$(free_port)"
  socket_path = "$work/sp.sock"
  trust_domain = "spire.test"
  data_dir = "$work/sp-data"
  log_level = "WARN"
  federation {
    bundle_endpoint {
      address = "127.0.0.1"
      port = $sp_port
      refresh_hint = "5m"
      profile "https_web" {
        serving_cert_file {
          cert_file_path = "$work/spire.pem"
          key_file_path = "$work/spire.key"
          file_sync_interval = "1h"
        }
      }
    }
  }
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = "$work/sp-data/datastore.sqlite3"
    }
  }
  KeyManager "memory" { plugin_data {} }
  NodeAttestor "join_token" { plugin_data {} }
}
EOF
"$spire" run -config "$work/spire.conf" >"$work/spire.log" 2>&1 &
sp_pid=$!
pids+=("$sp_pid")
sp_url="https://127.0.0.1:$sp_port/"

wait_https "$mr_url" "meshroot" "$mr_pid"

# meshroot-bundle relaying meshroot's endpoint (authenticated with the
# bench CA), polling every 5 s (its default).
"$work/meshroot-bundle" --trust-domain meshroot.test --upstream "$mr_url" --upstream-ca "$work/ca.pem" \
  --cert "$work/relay.pem" --key "$work/relay.key" --listen 127.0.0.1:0 >"$work/relay.log" 2>&1 &
rl_pid=$!
pids+=("$rl_pid")
rl_addr=$(endpoint_addr "$work/relay.log" "meshroot-bundle starting" "$rl_pid" "meshroot-bundle")
rl_url="https://$rl_addr/"

wait_https "$rl_url" "meshroot-bundle" "$rl_pid"
wait_https "$sp_url" "spire-server" "$sp_pid"
# All must really serve bundles to a client that checks the certificate.
for u in "$mr_url" "$rl_url" "$sp_url"; do
  curl -sf --cacert "$work/ca.pem" "$u" | grep -q '"x509-svid"' || die "$u does not serve a SPIFFE bundle"
done
# The relay serves meshroot's document, byte for byte.
[ "$(curl -sf --cacert "$work/ca.pem" "$mr_url")" = "$(curl -sf --cacert "$work/ca.pem" "$rl_url")" ] ||
  die "meshroot-bundle serves another document than meshroot's endpoint"

# Idle memory: both serve, nothing has loaded them yet.
sleep 3
m_idle=$(rss_mib "$mr_pid") m_parts=$(rss_parts "$mr_pid")
r_idle=$(rss_mib "$rl_pid") r_parts=$(rss_parts "$rl_pid")
s_idle=$(rss_mib "$sp_pid") s_parts=$(rss_parts "$sp_pid")

# run_wrk OUT ARGS...: wrk in the background, so that a signal reaches the
# trap at once and the cleanup stops wrk too.
run_wrk() {
  local out=$1 rc=0
  shift
  "${wrk_cpu[@]}" wrk "$@" >"$out" 2>&1 &
  local wpid=$!
  pids+=("$wpid")
  wait "$wpid" || rc=$?
  unset 'pids[-1]'
  return "$rc"
}

# bench NAME PID URL: sets rps p50 p99 cpu rss (peak under load) for the
# server at PID.
bench() {
  local name=$1 pid=$2 url=$3 out=$work/wrk-$1.txt t0 t1
  run_wrk "$work/warmup-$name.txt" -t"$threads" -c"$conns" -d"$warmup" "$url" || die "wrk warm-up against $name failed"
  t0=$(cpu_ticks "$pid")
  sample_rss "$pid" "$work/rss-$name" &
  local spid=$!
  pids+=("$spid")
  run_wrk "$out" -t"$threads" -c"$conns" -d"$duration" --latency "$url" || die "wrk against $name failed: $(cat "$out")"
  t1=$(cpu_ticks "$pid")
  kill "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
  unset 'pids[-1]'
  if grep -q 'Non-2xx or 3xx responses\|Socket errors' "$out"; then
    cat "$out" >&2
    die "$name: wrk saw errors"
  fi
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
  p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
  xfer=$(awk '/^Transfer\/sec:/ {print $2}' "$out")
  cpu=$(awk -v a="$t0" -v b="$t1" -v t="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", (b - a) / t}')
  rss=$(awk '{printf "%.1f", $1 / 1024}' "$work/rss-$name")
}

echo "load: wrk -t$threads -c$conns -d$duration --latency URL (keep-alive; ${warmup} warm-up each), $(nproc) cores" >&2
bench meshroot "$mr_pid" "$mr_url"
m_rps=$rps m_p50=$p50 m_p99=$p99 m_cpu=$cpu m_rss=$rss m_xfer=$xfer
bench relay "$rl_pid" "$rl_url"
r_rps=$rps r_p50=$p50 r_p99=$p99 r_cpu=$cpu r_rss=$rss r_xfer=$xfer
bench spire "$sp_pid" "$sp_url"
s_rps=$rps s_p50=$p50 s_p99=$p99 s_cpu=$cpu s_rss=$rss s_xfer=$xfer
if [ "$pinned" = 1 ]; then
  # Pinned: every thread of the server on CPU 1, wrk on CPU 0; then the
  # server gets its CPUs back.
  wrk_cpu=(taskset -c 0)
  pin() { taskset -a -p -c "$2" "$1" >/dev/null || die "taskset $1"; }
  cpus() { taskset -p -c "$1" | sed 's/.*: //'; }
  mr_cpus=$(cpus "$mr_pid") rl_cpus=$(cpus "$rl_pid") sp_cpus=$(cpus "$sp_pid")
  pin "$mr_pid" 1
  bench meshroot "$mr_pid" "$mr_url"
  pin "$mr_pid" "$mr_cpus"
  pm_rps=$rps pm_p50=$p50 pm_p99=$p99 pm_cpu=$cpu pm_xfer=$xfer
  pin "$rl_pid" 1
  bench relay "$rl_pid" "$rl_url"
  pin "$rl_pid" "$rl_cpus"
  pr_rps=$rps pr_p50=$p50 pr_p99=$p99 pr_cpu=$cpu pr_xfer=$xfer
  pin "$sp_pid" 1
  bench spire "$sp_pid" "$sp_url"
  pin "$sp_pid" "$sp_cpus"
  ps_rps=$rps ps_p50=$p50 ps_p99=$p99 ps_cpu=$cpu ps_xfer=$xfer
  wrk_cpu=()
fi

echo
printf '%-10s %12s %10s %10s %10s %14s %12s\n' server "requests/s" "p50 ms" "p99 ms" "CPU s" "CPU ms/1k req" "transfer/s"
row() {
  local secs
  secs=$(awk -v d="$duration" 'BEGIN {n = d + 0; if (d ~ /m$/) n *= 60; else if (d ~ /h$/) n *= 3600; print n}')
  printf '%-10s %12.0f %10.3f %10.3f %10.2f %14.1f %12s\n' "$1" "$2" "$3" "$4" "$5" \
    "$(awk -v c="$5" -v r="$2" -v s="$secs" 'BEGIN {print (r > 0 ? 1e6 * c / (r * s) : 0)}')" "$6"
}
row meshroot "$m_rps" "$m_p50" "$m_p99" "$m_cpu" "$m_xfer"
row relay "$r_rps" "$r_p50" "$r_p99" "$r_cpu" "$r_xfer"
row spire "$s_rps" "$s_p50" "$s_p99" "$s_cpu" "$s_xfer"
if [ "$pinned" = 1 ]; then
  echo "pinned: the server's threads on CPU 1, wrk on CPU 0"
  row meshroot "$pm_rps" "$pm_p50" "$pm_p99" "$pm_cpu" "$pm_xfer"
  row relay "$pr_rps" "$pr_p50" "$pr_p99" "$pr_cpu" "$pr_xfer"
  row spire "$ps_rps" "$ps_p50" "$ps_p99" "$ps_cpu" "$ps_xfer"
fi
echo
printf '%-10s %14s %16s %16s %18s\n' server "RSS idle MiB" "idle: file MiB" "idle: anon MiB" "RSS under load MiB"
mrow() { printf '%-10s %14.1f %16.1f %16.1f %18.1f\n' "$1" "$2" "${3% *}" "${3#* }" "$4"; }
mrow meshroot "$m_idle" "$m_parts" "$m_rss"
mrow relay "$r_idle" "$r_parts" "$r_rss"
mrow spire "$s_idle" "$s_parts" "$s_rss"
echo "(relay: meshroot-bundle, serving meshroot's bundle at the edge; it runs beside the meshroot server, which it fetches from)"
echo
# ratios NAME RPS PINNED_RPS P99 IDLE RSS: NAME's ratios against SPIRE's.
ratios() {
  awk -v n="$1" -v m="$2" -v s="$s_rps" -v t="$target" 'BEGIN {
    printf "ratio %s/SPIRE requests/s: %.2f (target >= %.1f): %s\n", n, m / s, t, (m / s >= t ? "MET" : "NOT MET")
  }'
  if [ "$pinned" = 1 ]; then
    awk -v n="$1" -v m="$3" -v s="$ps_rps" -v t="$target" 'BEGIN {
      printf "ratio %s/SPIRE requests/s, each server on one core, wrk on the other: %.2f (target >= %.1f): %s\n", n, m / s, t, (m / s >= t ? "MET" : "NOT MET")
    }'
  fi
  awk -v n="$1" -v m="$4" -v s="$s_p99" 'BEGIN { printf "ratio %s/SPIRE p99 latency: %.2f (lower is better)\n", n, m / s }'
  awk -v n="$1" -v m="$5" -v s="$s_idle" 'BEGIN { printf "ratio %s/SPIRE RSS idle: %.2f\n", n, m / s }'
  awk -v n="$1" -v m="$6" -v s="$s_rss" -v t="$rss_target" 'BEGIN {
    printf "ratio %s/SPIRE RSS under load: %.2f (target <= %.2f): %s\n", n, m / s, t, (m / s <= t ? "MET" : "NOT MET")
  }'
}
ratios meshroot "$m_rps" "${pm_rps:-0}" "$m_p99" "$m_idle" "$m_rss"
echo "the edge relay (meshroot-bundle) against SPIRE:"
ratios relay "$r_rps" "${pr_rps:-0}" "$r_p99" "$r_idle" "$r_rss"
awk -v r="$r_rss" -v m="$m_idle" -v s="$s_rss" 'BEGIN {
  printf "ratio (relay under load + meshroot server idle)/SPIRE RSS: %.2f (both processes, for a deployment that runs the relay on the CA'"'"'s node)\n", (r + m) / s
}'
