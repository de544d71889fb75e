# make e2e: imagegate against a real containerd, a real registry and real
# cosign signatures (test/e2e). Needs root, user namespaces and overlayfs;
# .ci/run checks for them before it calls this target.
#
# What the test runs is built once per machine and cached beside the other
# tools: containerd and its shim take about 3 minutes cold, cosign 5.
# E2E_KEEP=1 keeps the test's directory (logs, configs, keys) for a look.

CONTAINERD_VERSION := v2.4.2
CRANE_VERSION      := v0.22.1
E2E_CACHE          ?= $(HOME)/.cache/imagegate/e2e
E2E_CONTAINERD_DIR := $(E2E_CACHE)/containerd-$(CONTAINERD_VERSION)
CRANE              := $(TOOLS)/crane-$(CRANE_VERSION)
E2E_TIMEOUT        ?= 15m

.PHONY: e2e e2e-packages

e2e: build $(COSIGN) $(CRANE) $(E2E_CONTAINERD_DIR)/containerd e2e-packages
	E2E_IMAGEGATE=$(CURDIR)/bin/imagegate \
	E2E_CONTAINERD_DIR=$(E2E_CONTAINERD_DIR) \
	E2E_RUNC=$$(command -v runc) \
	E2E_BUSYBOX=/bin/busybox \
	E2E_CRANE=$(CRANE) \
	E2E_COSIGN=$(COSIGN) \
	$(GO) test -tags e2e -v -count=1 -timeout $(E2E_TIMEOUT) ./test/...

# runc and a statically linked busybox (the whole of the test's images)
# from the distribution; the package lists are refreshed only when an
# install from the current ones fails.
e2e-packages:
	@if ! command -v runc >/dev/null || ! dpkg -s busybox-static >/dev/null 2>&1; then \
		echo "installing runc busybox-static"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q runc busybox-static || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q runc busybox-static; }; \
	fi

# Both binaries land together or not at all: a half-built cache would be
# taken as complete by the next run.
$(E2E_CONTAINERD_DIR)/containerd:
	@rm -rf $(E2E_CONTAINERD_DIR).tmp && mkdir -p $(E2E_CONTAINERD_DIR).tmp
	GOBIN=$(E2E_CONTAINERD_DIR).tmp CGO_ENABLED=0 $(GO) install -tags no_btrfs \
		github.com/containerd/containerd/v2/cmd/containerd@$(CONTAINERD_VERSION) \
		github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$(CONTAINERD_VERSION)
	rm -rf $(E2E_CONTAINERD_DIR) && mv $(E2E_CONTAINERD_DIR).tmp $(E2E_CONTAINERD_DIR)

$(CRANE):
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) CGO_ENABLED=0 $(GO) install github.com/google/go-containerregistry/cmd/crane@$(CRANE_VERSION)
	mv $(TOOLS)/crane $@
