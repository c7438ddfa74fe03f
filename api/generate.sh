#!/usr/bin/env bash
# Regenerates the Go code of api/meshroot/v1 and api/meshroot/plugin/v1
# (meshroot-plugin's services) from their .proto files with
# protoc (Debian's protobuf-compiler) and pinned protoc-gen-go and
# protoc-gen-go-grpc, installed into the tool cache when missing.
set -euo pipefail
cd "$(dirname "$0")"
cache=${MESHROOT_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshroot-test}
bin="$cache/bin/protoc-gen"
PROTOC_GEN_GO=v1.36.12
PROTOC_GEN_GO_GRPC=v1.5.1
if ! command -v protoc >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler) >/dev/null
fi
[ -x "$bin/protoc-gen-go-$PROTOC_GEN_GO" ] || { GOBIN="$bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO" && mv "$bin/protoc-gen-go" "$bin/protoc-gen-go-$PROTOC_GEN_GO"; }
[ -x "$bin/protoc-gen-go-grpc-$PROTOC_GEN_GO_GRPC" ] || { GOBIN="$bin" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC" && mv "$bin/protoc-gen-go-grpc" "$bin/protoc-gen-go-grpc-$PROTOC_GEN_GO_GRPC"; }
protoc -I . -I /usr/include \
  --plugin=protoc-gen-go="$bin/protoc-gen-go-$PROTOC_GEN_GO" \
  --plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc-$PROTOC_GEN_GO_GRPC" \
  --go_out=. --go_opt=paths=source_relative \
  --go-grpc_out=. --go-grpc_opt=paths=source_relative \
  meshroot/v1/*.proto meshroot/plugin/v1/*.proto
echo "generated: $(ls meshroot/v1/*.go meshroot/plugin/v1/*.go | tr '\n' ' ')"
