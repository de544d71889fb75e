# imagegate — build, test, benchmark and demo. Everything this file needs
# beyond Go itself it installs on first use (tools go to $(TOOLS)).

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
TOOLS     ?= $(HOME)/.cache/imagegate/tools
STATICCHECK_VERSION := v0.8.2
COSIGN_VERSION      := v2.6.5
COSIGN3_VERSION     := v3.1.3
STATICCHECK := $(TOOLS)/staticcheck-$(STATICCHECK_VERSION)
COSIGN      := $(TOOLS)/cosign-$(COSIGN_VERSION)
COSIGN3     := $(TOOLS)/cosign-$(COSIGN3_VERSION)
BENCHTIME ?= 2s

export GOTOOLCHAIN := local

.PHONY: all build test lint unit fuzz soak bench demo clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/imagegate ./cmd/imagegate
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o bin/imagegate-runc ./cmd/imagegate-runc

## test: formatting, vet, staticcheck, and every unit test (fuzz seeds
## included) under the race detector.
test: lint unit

lint: $(STATICCHECK)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

unit:
	$(GO) test -race -count=1 ./...

$(STATICCHECK):
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	mv $(TOOLS)/staticcheck $@

$(COSIGN):
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) CGO_ENABLED=0 $(GO) install github.com/sigstore/cosign/v2/cmd/cosign@$(COSIGN_VERSION)
	mv $(TOOLS)/cosign $@

## fuzz: each fuzz target for FUZZTIME (make test runs only their seeds).
FUZZTIME ?= 30s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

## soak: the load and soak tests through real NRI at full length
## (60 s, at least 1000 cached creates/s, flat memory; IMAGEGATE_SOAK_DURATION
## overrides). make test runs a 3 s version of each.
soak:
	IMAGEGATE_SOAK=1 $(GO) test -run 'TestSoak|TestHitsStayFast' -v -count=1 ./plugin/

## bench: the numbers of BENCHMARKS.md.
bench: build $(COSIGN) $(COSIGN3)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./verify/ ./cache/ ./plugin/ ./policy/ ./cmd/imagegate-runc/
	$(GO) run ./internal/cmd/cmpbench --imagegate bin/imagegate --cosign $(COSIGN) --cosign3 $(COSIGN3)

## demo: a local registry, three signers, sample images and their verdicts.
demo: build
	$(GO) run ./internal/cmd/demo --imagegate bin/imagegate

clean:
	rm -rf bin dist

# Further targets (end-to-end, packages) live beside this file, one
# concern per file.
include $(wildcard mk/*.mk)
