# shadowproxy build targets. Everything needs only Go; targets that need
# other tools (bench-compare: wrk, nginx, haproxy) install them themselves.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
BIN       := bin/shadowproxy
PKGS      := ./...
FUZZTIME  ?= 20s
# Packages with allocation pins (tests named *Alloc*), run again without -race.
ALLOC_PKGS := ./proxy ./internal/metrics ./splitter ./diff ./internal/rollout ./internal/tracing

.PHONY: all build run test test-helm http2-curl test-short browser screenshots bench bench-compare bench-compare-h2 lint fmt fuzz soak clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/shadowproxy

## run: the built-in demo (backends, proxy, simulated users) on loopback
run: build
	./$(BIN) demo

## test: vet, then every test with the race detector (fuzz seed corpora included)
test:
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 15m $(PKGS)
	@# Allocation pins only mean something without the race detector.
	$(GO) test -count=1 -run 'Alloc' $(ALLOC_PKGS)
	$(MAKE) test-helm

## test-helm: render the Helm chart for each of its ci/ values files and check the objects.
## deploy/helm is its own Go module: Helm's packages pull in Kubernetes' client
## libraries, which the proxy itself must neither depend on nor compile.
test-helm:
	cd deploy/helm && $(GO) vet ./... && $(GO) test -count=1 ./...

## browser: the dashboard tested in headless Chromium (installs it when missing)
browser:
	bash .ci/browser.sh

## screenshots: the browser test's three moments of the demo, saved to docs/screenshots for the README
screenshots:
	SHADOWPROXY_SCREENSHOTS=$(CURDIR)/docs/screenshots bash .ci/browser.sh

test-short:
	$(GO) test -count=1 $(PKGS)

## http2-curl: HTTP/2 (h2c prior knowledge, ALPN h2) checked with a real curl on loopback
http2-curl: build
	bash .ci/http2-curl.sh

## bench: Go micro-benchmarks with allocation counts
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime=2s $(PKGS)
	$(GO) run ./bench/shadowcmp
	$(GO) run ./bench/holcmp

## bench-compare: side-by-side against direct, nginx and HAProxy (installs them),
## then the HTTP/2 row against nginx's http2 (h2load; wrk speaks HTTP/1.1 only)
bench-compare: build
	bash bench/compare.sh
	bash bench/h2compare.sh

## lint: formatting and vet
lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

## fuzz: each fuzz target for FUZZTIME
fuzz:
	bash .ci/fuzz.sh $(FUZZTIME)

## bench-compare-h2: HTTP/2 to clients, shadowproxy h2c against nginx http2 with h2load (installs it)
bench-compare-h2:
	bash bench/h2compare.sh

## soak: bounded mixed-load run of bin/shadowproxy; fails if RSS, goroutines or fds keep growing (SOAK_DURATION, default 2m)
soak: build
	$(GO) run ./bench/soak

clean:
	rm -rf bin
