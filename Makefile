# meshroot: `make run` for the demo, `make test` for everything CI runs.
GO      ?= go
BIN     := bin/meshroot
AGENT   := bin/meshroot-agent
PLUGIN  := bin/meshroot-plugin
RELAY   := bin/meshroot-bundle
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# gRPC without golang.org/x/net/trace (its grpcnotrace build tag): that
# package's html/template calls methods by name through reflection, which
# makes the linker keep every exported method of every type it links.
# Without it meshroot-agent is 19 % smaller (20.9 -> 17.0 MB) and holds
# ~3 MiB less RSS (docs/performance.md, "The lean agent in a fleet"). The
# builds, tests and benchmarks below all use it, so that the tests compile
# gRPC and its dependents once, as the binaries are built.
GOTAGS  := grpcnotrace

.PHONY: no-big-files no-merge-markers all build run demo test test-deps test-postgres tools vet unit test-kube test-spire test-browser test-tracestat fuzz bench bench-grpc bench-bundle bench-idle bench-crl bench-fleet generate clean

all: build

## build: bin/meshroot (server, CLI, agent), bin/meshroot-plugin (cloud KMS
## keys and the step-ca upstream, run by meshroot next to it),
## bin/meshroot-agent (the lean agent) and bin/meshroot-bundle (the bundle
## endpoint for the network edge, relaying meshroot's)
build:
	$(GO) build -trimpath -tags $(GOTAGS) -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/meshroot
	$(GO) build -trimpath -tags $(GOTAGS) -ldflags "$(LDFLAGS)" -o $(PLUGIN) ./cmd/meshroot-plugin
	$(GO) build -trimpath -tags $(GOTAGS) -ldflags "$(LDFLAGS)" -o $(AGENT) ./cmd/meshroot-agent
	$(GO) build -trimpath -tags $(GOTAGS) -ldflags "$(LDFLAGS)" -o $(RELAY) ./cmd/meshroot-bundle

## run: build, then start a dev server on 127.0.0.1 (data in ./meshroot-data)
run: build
	$(BIN) serve --dev

## demo: offline, without a server: a root and cacerts for two clusters under ./out
demo: build
	scripts/demo.sh

## test: what CI runs (.ci/run): installs and builds what the tests need
## (cached), vets, then runs the main module's tests and the modules
## against real kube-apiservers, istiods, SPIRE and Chromium in two lanes
## at once (test/lanes.sh). On a fresh machine the tools compile while
## the Debian packages download and install, which leave the CPU idle.
test:
	@$(MAKE) --no-print-directory tools & tools=$$!; \
	  $(MAKE) --no-print-directory test-deps; deps=$$?; \
	  wait $$tools; built=$$?; [ $$deps -eq 0 ] && [ $$built -eq 0 ]
	@$(MAKE) --no-print-directory vet
	test/lanes.sh

# The tests and vet build with -trimpath: the build cache's keys then
# leave out the checkout's folder, so that a checkout elsewhere (CI's
# workspace, a new worktree) reuses what the last run compiled instead of
# recompiling every package and test binary. (The harnesses find
# test/tools/build.sh from the working directory, not from source paths.)
#
# They also build with the binaries' tags (GOTAGS), and so do the
# benchmarks: what is tested and measured is what is shipped. The tools
# (test/tools/build.sh) build as their projects do.
#
# And they link without DWARF (-ldflags=-w; the shipped binaries link
# with -s -w): `go test -count=1` links every package's test binary on
# every run, ~50 links, and DWARF is about a quarter of each (a third of
# meshroot's). Stack traces do not need it. The harnesses link meshroot's
# commands through test/tools/meshroot-bins.sh, once per content.
TESTFLAGS := -trimpath -tags=$(GOTAGS) -ldflags=-w
vet unit test-kube test-spire test-browser test-tracestat fuzz bench bench-grpc bench-crl bench-fleet bench-bundle bench-idle: export GOFLAGS := $(strip $(filter-out $(TESTFLAGS) -ldflags=%,$(GOFLAGS)) $(TESTFLAGS))

## tools: build the real components the tests run (cached under ~/.cache/meshroot-test),
## in two streams at once: each compile leaves the CPU idle while it links
## (one core) and while its modules download, and the other fills it
tools:
	@test/tools/build.sh kube-apiserver istiosigner istiod >/dev/null & kube=$$!; \
	  test/tools/build.sh spire vault step-ca >/dev/null; rest=$$?; \
	  wait $$kube && [ $$rest -eq 0 ]

# Debian packages the tests need; installed only when missing.
test-deps:
	@missing=""; \
	  command -v openssl >/dev/null || missing="$$missing openssl"; \
	  [ -e /usr/lib/softhsm/libsofthsm2.so ] || missing="$$missing softhsm2"; \
	  command -v promtool >/dev/null || missing="$$missing prometheus"; \
	  command -v sqlite3 >/dev/null || missing="$$missing sqlite3"; \
	  command -v chromium >/dev/null || missing="$$missing chromium"; \
	  command -v tinyproxy >/dev/null || missing="$$missing tinyproxy"; \
	  [ -x /usr/sbin/ip ] || missing="$$missing iproute2"; \
	  if [ -n "$$missing" ]; then echo "installing$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null; fi
	@$(MAKE) --no-print-directory test-postgres

## test-postgres: the store/postgres tests (and `store migrate`'s, and the
## HA tests in server, cmd/meshroot and test/e2e: replicas on one database) need a
## PostgreSQL server, 13 or newer; each test creates and drops its own database.
## The fault test that restarts the database runs a private server (test/pgenv)
## from the local PostgreSQL binaries.
PG_HOST ?= 127.0.0.1
PG_PORT ?= 5432
test-postgres:
	@if [ -z "$$MESHROOT_TEST_PG_BIN" ] && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then \
	    echo "The HA fault tests (test/e2e, through test/pgenv) start a private PostgreSQL server: they need its binaries"; \
	    echo "(initdb, pg_ctl) in /usr/lib/postgresql/*/bin (apt-get install postgresql), or MESHROOT_TEST_PG_BIN naming their folder;"; \
	    echo "run as root, they run the server as user postgres through runuser."; \
	    exit 1; fi
	@if [ -n "$$MESHROOT_TEST_POSTGRES" ]; then exit 0; fi; \
	  if ! timeout 5 bash -c 'exec 3<>/dev/tcp/$(PG_HOST)/$(PG_PORT)' 2>/dev/null; then \
	    echo "PostgreSQL is not listening on $(PG_HOST):$(PG_PORT): the store/postgres tests need a PostgreSQL server (13 or newer)"; \
	    echo "that lets user postgres in without a password (trust authentication) and create databases."; \
	    echo "On Debian: apt-get install postgresql, then pg_ctlcluster --skip-systemctl-redirect \$$(ls /etc/postgresql) main start;"; \
	    echo "or set MESHROOT_TEST_POSTGRES to the DSN of another server's maintenance database."; \
	    exit 1; fi

vet: no-big-files no-merge-markers
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...

## no-merge-markers: a merge's conflict markers never land
no-merge-markers:
	@if git grep -n -E '^(<<<<<<<|>>>>>>>) ' -- . 2>/dev/null; then echo "merge conflict markers in tracked files: resolve them"; exit 1; fi

## no-big-files: build output never enters git; refuse any tracked file over 2 MB
no-big-files:
	@big=$$(git ls-files -z 2>/dev/null | xargs -0 -r stat -c '%s %n' 2>/dev/null | awk '$$1 > 2097152 {print $$2" ("$$1" bytes)"}'); \
	  if [ -n "$$big" ]; then echo "tracked files over 2 MB (build output does not belong in git; git rm --cached them and ignore them):"; echo "$$big"; exit 1; fi

unit:
	$(GO) test -count=1 -timeout 20m ./...

test-kube:
	test/kube/run.sh

test-spire:
	cd test/spire && $(GO) vet ./... && $(GO) test -count=1 -timeout 10m ./...

## test-tracestat: the reader of bench-fleet's -trace-slow traces (its own
## module: meshroot does not depend on golang.org/x/exp)
test-tracestat:
	cd test/bench/tracestat && $(GO) vet ./... && $(GO) test -count=1 -timeout 5m ./...

## test-browser: the fleet page in headless Chromium over the DevTools
## protocol (its own module: meshroot does not depend on chromedp);
## MESHROOT_BROWSER_OUT=DIR keeps the screenshots
test-browser:
	cd test/browser && $(GO) vet ./... && $(GO) test -count=1 -timeout 10m ./...

## fuzz: run the CSR intake fuzzer for a while (FUZZTIME, default 60s)
FUZZTIME ?= 60s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzCSRIntake -fuzztime $(FUZZTIME) ./ca/

## bench: intermediate signing vs raw x509.CreateCertificate, with ratios
bench:
	test/bench/sign.sh

## bench-grpc: SignIntermediate over gRPC vs in-process, SQLite vs PostgreSQL 1 and 3 replicas (+ watch fan-out), 64 concurrent callers (-postgres=false: no PostgreSQL)
bench-grpc:
	$(GO) run ./test/bench/grpcsign -c 64 -d 10s

## bench-crl: CRL of 10,000 revoked intermediates to 100 in-process agents: Secret bytes, signing vs raw, quarantine to applied
bench-crl:
	$(GO) run ./test/bench/crl -revoked 10000 -clusters 100

## bench-bundle: our SPIFFE bundle endpoint vs SPIRE's, same load (wrk): requests/s, CPU, RSS idle and under load
bench-bundle:
	test/bench/bundle-endpoint.sh

## bench-fleet: one `meshroot serve`, 100 then 1,000 in-process agents:
## bundle fan-out, a 100-cluster rotation, server and lean agent RSS
## (FLEET_FLAGS="-large 400" for fewer; docs/performance.md: 1,000 needs
## many GB of memory today)
FLEET_FLAGS ?=
bench-fleet: build
	$(GO) run ./test/bench/fleet -meshroot $(BIN) -agent $(AGENT) $(FLEET_FLAGS)

## bench-idle: idle RSS of serve --dev, serve --config, meshroot agent and meshroot-agent
bench-idle:
	test/bench/idle-rss.sh

## generate: regenerate api/meshroot/v1 from its .proto files (installs protoc when missing)
generate:
	api/generate.sh

clean:
	rm -rf bin out meshroot-data
