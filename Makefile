# meshroot: `make run` for the demo, `make test` for everything CI runs.
GO      ?= go
BIN     := bin/meshroot
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: all build run test test-deps vet unit fuzz bench generate clean

all: build

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/meshroot

## run: build, then create a root and cacerts for two clusters under ./out
run: build
	scripts/demo.sh

## test: what CI runs (.ci/run): installs what the tests need, vets, runs every test
test: test-deps vet unit

# Packages the tests need; installed only when missing.
test-deps:
	@command -v openssl >/dev/null || { echo "installing openssl"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl) >/dev/null; }

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -count=1 ./...

## fuzz: run the CSR intake fuzzer for a while (FUZZTIME, default 60s)
FUZZTIME ?= 60s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzCSRIntake -fuzztime $(FUZZTIME) ./ca/

## bench: intermediate signing vs raw x509.CreateCertificate, with ratios
bench:
	test/bench/sign.sh

## generate: regenerate api/meshroot/v1 from its .proto files (installs protoc when missing)
generate:
	api/generate.sh

clean:
	rm -rf bin out
