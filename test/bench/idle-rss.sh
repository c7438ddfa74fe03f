#!/usr/bin/env bash
# Idle memory of meshroot's processes, in one run on 127.0.0.1:
#   - `meshroot serve --dev` (a root and cluster "dev" created at start);
#   - `meshroot serve --config FILE` (not dev: SQLite in a data dir, a root
#     made with `meshroot root init`, the https_web bundle endpoint);
#   - `meshroot agent` and `meshroot-agent`, each keeping one cluster's
#     cacerts in a folder (--out) and watching the trust bundle.
#
# Usage: test/bench/idle-rss.sh [settle]   (default settle 10s: how long
#        each process idles before it is measured)
#
# Binaries are built as `make build` builds them (-trimpath -ldflags "-s
# -w"). Each process runs its own copy, which starts out of the page cache
# (dd iflag=nocache), as on a node that just pulled the image: a binary
# that was just written, or that other processes run, stays cached in large
# folios, which newer kernels map whole, and its RSS then counts nearly all
# of its text. Prints, per process, VmRSS and its
# file-backed part (the mapped binary: it grows with what is linked) and its
# anonymous part (heap, stacks); and per binary its size and how many
# packages it links. Exits non-zero only when a process fails to start.
set -euo pipefail
cd "$(dirname "$0")/../.."
settle=${1:-10s}

pids=()
work=$(mktemp -d /tmp/mr-idle.XXXXXX)
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$rc" -ne 0 ]; then
    for f in "$work"/*.log; do
      [ -f "$f" ] || continue
      echo "---- $(basename "$f") (last 20 lines) ----" >&2
      tail -n 20 "$f" >&2
    done
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() { echo "idle-rss bench: $*" >&2; exit 1; }
for c in openssl dd awk; do command -v "$c" >/dev/null || die "$c is needed"; done

echo "building meshroot and meshroot-agent (as make build does)" >&2
go build -trimpath -tags grpcnotrace -ldflags "-s -w" -o "$work/meshroot" ./cmd/meshroot
go build -trimpath -tags grpcnotrace -ldflags "-s -w" -o "$work/meshroot-agent" ./cmd/meshroot-agent
mr=$work/meshroot
# own NAME BIN: a copy of BIN for one process, out of the page cache. Each
# process gets its own copy: pages another process faulted in would
# otherwise be mapped into this one too, whole folios at a time.
own() {
  cp "$2" "$work/bin-$1"
  sync "$work/bin-$1"
  dd if="$work/bin-$1" iflag=nocache count=0 status=none
  echo "$work/bin-$1"
}

# start_serve NAME ARGS...: starts meshroot serve in $work/NAME, waits for
# its start line, sets pid and sock.
start_serve() {
  local name=$1
  shift
  mkdir -p "$work/$name"
  local bin
  bin=$(own "$name" "$mr")
  (cd "$work/$name" && exec "$bin" serve "$@") >"$work/$name.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 150); do
    grep -q '"msg":"meshroot server starting"' "$work/$name.log" && return
    kill -0 "$pid" 2>/dev/null || die "$name exited"
    sleep 0.1
  done
  die "$name printed no start line"
}

# mem PID: "rss file anon" in MiB from /proc/PID/status.
mem() {
  awk '/^VmRSS:/ {r = $2} /^RssFile:/ {f = $2} /^RssAnon:/ {a = $2}
    END {printf "%.1f %.1f %.1f", r / 1024, f / 1024, a / 1024}' "/proc/$1/status"
}

# serve --dev, on ports of its own (not the dev defaults, which another
# server may hold).
start_serve dev --dev --socket "$work/dev.sock" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --bundle-endpoint-listen 127.0.0.1:0
dev_pid=$pid
ca_pem=$work/dev/meshroot-data/server-ca.pem
for _ in $(seq 100); do [ -s "$ca_pem" ] && break; sleep 0.1; done
[ -s "$ca_pem" ] || die "serve --dev wrote no $ca_pem"
issuer=$(sed -n 's/.*"msg":"meshroot server starting".*"issuer":"\([^"]*\)".*/\1/p' "$work/dev.log")

# serve --config: what a deployment runs (not dev mode).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj "/CN=bench" -addext "subjectAltName=IP:127.0.0.1" \
  -keyout "$work/web.key" -out "$work/web.pem" 2>/dev/null
cat >"$work/meshroot.yaml" <<EOF
dataDir: $work/cfg-data
listen: 127.0.0.1:0
httpListen: 127.0.0.1:0
adminSocket: $work/cfg.sock
trustDomain: bench.test
insecurePlaintextKey: true
bundleEndpoint:
  listen: 127.0.0.1:0
  profile: https_web
  certFile: $work/web.pem
  keyFile: $work/web.key
EOF
start_serve cfg --config "$work/meshroot.yaml"
cfg_pid=$pid
"$mr" --socket "$work/cfg.sock" root init --trust-domain bench.test >/dev/null

# Two agents against the dev server, one cluster each.
start_agent() {
  local name=$1 bin=$2 token
  shift 2
  "$mr" --socket "$work/dev.sock" cluster add "$name" >/dev/null
  token=$("$mr" --socket "$work/dev.sock" token create --cluster "$name" | grep -o 'mrt\.[A-Za-z0-9._-]*' | head -n 1)
  [ -n "$token" ] || die "no join token for $name"
  bin=$(own "$name" "$bin")
  "$bin" "$@" --server "$issuer" --server-ca "$ca_pem" --cluster "$name" --join-token "$token" \
    --out "$work/$name-out" >"$work/$name.log" 2>&1 &
  pid=$!
  pids+=("$pid")
}
start_agent full "$mr" agent
full_pid=$pid
start_agent lean "$work/meshroot-agent"
lean_pid=$pid
for _ in $(seq 300); do
  [ -s "$work/full-out/ca-cert.pem" ] && [ -s "$work/lean-out/ca-cert.pem" ] && break
  kill -0 "$full_pid" 2>/dev/null || die "meshroot agent exited"
  kill -0 "$lean_pid" 2>/dev/null || die "meshroot-agent exited"
  sleep 0.1
done
[ -s "$work/full-out/ca-cert.pem" ] && [ -s "$work/lean-out/ca-cert.pem" ] || die "an agent wrote no cacerts"

sleep "$settle"
echo
printf '%-32s %9s %10s %10s\n' process "RSS MiB" "file MiB" "anon MiB"
row() { read -r r f a <<<"$(mem "$2")"; printf '%-32s %9.1f %10.1f %10.1f\n' "$1" "$r" "$f" "$a"; }
row "meshroot serve --dev" "$dev_pid"
row "meshroot serve --config" "$cfg_pid"
row "meshroot agent (--out)" "$full_pid"
row "meshroot-agent (--out)" "$lean_pid"
echo
printf '%-16s %14s %10s\n' binary "bytes" "packages"
for b in meshroot meshroot-agent; do
  printf '%-16s %14s %10s\n' "$b" "$(stat -c %s "$work/$b")" "$(go list -deps "./cmd/$b" | wc -l)"
done
echo
awk -v d="$(mem "$dev_pid")" -v c="$(mem "$cfg_pid")" -v l="$(mem "$lean_pid")" 'BEGIN {
  split(d, D, " "); split(c, C, " "); split(l, L, " ")
  mb = 1048576 / 1e6
  printf "serve --dev idle: %.1f MB (goal < 40 MB): %s\n", D[1] * mb, (D[1] * mb < 40 ? "MET" : "NOT MET")
  printf "serve --config idle: %.1f MB (goal < 40 MB): %s\n", C[1] * mb, (C[1] * mb < 40 ? "MET" : "NOT MET")
  printf "meshroot-agent idle: %.1f MB (goal < 25 MB): %s\n", L[1] * mb, (L[1] * mb < 25 ? "MET" : "NOT MET")
}'
