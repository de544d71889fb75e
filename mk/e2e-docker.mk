# make e2e-docker: imagegate on Docker Engine nodes (test/e2edocker): two
# dockerd engines, each with its own containerd, forming a swarm on loopback
# (manager 127.0.0.1, worker 127.0.0.2), a loopback registry and images
# signed by the real cosign CLI. Needs root, user namespaces and overlayfs
# (the same gate as make e2e in .ci/run); it also needs 127.0.0.2 and the
# swarm ports 2377/7946 free on loopback.
#
# dockerd, the docker CLI and runc are built from source once per machine
# and cached beside containerd (mk/e2e.mk): dockerd about 2.5 minutes cold,
# the CLI and runc well under a minute each. E2E_KEEP=1 keeps the test's
# directory (engine logs, daemon.json, imagegate configs) for a look.

# mk/e2e.mk (read after this file) owns containerd, crane and E2E_CACHE;
# its variables are used in prerequisites through second expansion.
E2E_CACHE          ?= $(HOME)/.cache/imagegate/e2e
DOCKERD_VERSION    := v2.0.0-beta.24
DOCKERD_ENGINE_VER := 29.8.0
DOCKER_CLI_VERSION := v29.8.1
RUNC_VERSION       := v1.4.3
E2E_DOCKERD_DIR    := $(E2E_CACHE)/dockerd-$(DOCKERD_VERSION)
E2E_DOCKER_CLI_DIR := $(E2E_CACHE)/docker-cli-$(DOCKER_CLI_VERSION)
E2E_RUNC_DIR       := $(E2E_CACHE)/runc-$(RUNC_VERSION)
E2E_DOCKER_TIMEOUT ?= 15m

.PHONY: e2e-docker bench-docker e2e-docker-tools e2e-docker-packages

# make build builds imagegate and the guard runtime imagegate-runc.
e2e-docker: build e2e-docker-tools
	E2E_IMAGEGATE=$(CURDIR)/bin/imagegate \
	E2E_IMAGEGATE_RUNC=$(CURDIR)/bin/imagegate-runc \
	E2E_CONTAINERD_DIR=$(E2E_CONTAINERD_DIR) \
	E2E_DOCKERD=$(E2E_DOCKERD_DIR)/dockerd \
	E2E_DOCKER=$(E2E_DOCKER_CLI_DIR)/docker \
	E2E_RUNC=$(E2E_RUNC_DIR)/runc \
	E2E_BUSYBOX=/bin/busybox \
	E2E_CRANE=$(CRANE) \
	E2E_COSIGN=$(COSIGN) \
	$(GO) test -tags e2edocker -v -count=1 -timeout $(E2E_DOCKER_TIMEOUT) $(E2E_DOCKER_RUN) ./test/e2edocker/

# The Docker numbers of BENCHMARKS.md, in one run: TestDockerLatency, which
# make e2e-docker skips (it needs IMAGEGATE_DOCKER_BENCH=1), alone. Batches:
# IMAGEGATE_DOCKER_BENCH_BATCHES (20) of IMAGEGATE_DOCKER_BENCH_BATCH (10)
# containers per side.
bench-docker: export IMAGEGATE_DOCKER_BENCH = 1
bench-docker: E2E_DOCKER_RUN = -run '^TestDockerLatency$$'
bench-docker: e2e-docker

# Everything the test runs, built or installed when missing.
.SECONDEXPANSION:
e2e-docker-tools: $(COSIGN) $$(CRANE) $$(E2E_CONTAINERD_DIR)/containerd e2e-docker-packages \
	$(E2E_DOCKERD_DIR)/dockerd $(E2E_DOCKER_CLI_DIR)/docker $(E2E_RUNC_DIR)/runc

# busybox-static (the test's images) and what runc's seccomp build needs.
e2e-docker-packages:
	@if ! dpkg -s busybox-static libseccomp-dev pkg-config gcc >/dev/null 2>&1; then \
		echo "installing busybox-static libseccomp-dev pkg-config gcc"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static libseccomp-dev pkg-config gcc || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static libseccomp-dev pkg-config gcc; }; \
	fi

# Each binary lands whole or not at all (built into .tmp, then renamed):
# a half-built cache would be taken as complete by the next run.
$(E2E_DOCKERD_DIR)/dockerd:
	@rm -rf $(E2E_DOCKERD_DIR).tmp && mkdir -p $(E2E_DOCKERD_DIR).tmp
	GOBIN=$(E2E_DOCKERD_DIR).tmp CGO_ENABLED=0 $(GO) install -tags "netgo osusergo nri_no_wasm" \
		-ldflags "-X github.com/moby/moby/v2/dockerversion.Version=$(DOCKERD_ENGINE_VER)" \
		github.com/moby/moby/v2/cmd/dockerd@$(DOCKERD_VERSION)
	rm -rf $(E2E_DOCKERD_DIR) && mv $(E2E_DOCKERD_DIR).tmp $(E2E_DOCKERD_DIR)

# github.com/docker/cli has no go.mod: build it from a copy of its module
# with vendor.mod as go.mod (go install resolves its dependencies afresh and
# fails on an ambiguous genproto import).
$(E2E_DOCKER_CLI_DIR)/docker:
	@rm -rf $(E2E_DOCKER_CLI_DIR).tmp && mkdir -p $(E2E_DOCKER_CLI_DIR).tmp
	set -e; src=$$(cd $(E2E_DOCKER_CLI_DIR).tmp && GOFLAGS= $(GO) mod download -json github.com/docker/cli@$(DOCKER_CLI_VERSION)+incompatible | \
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p'); \
	test -n "$$src"; \
	cp -r "$$src" $(E2E_DOCKER_CLI_DIR).tmp/src && chmod -R u+w $(E2E_DOCKER_CLI_DIR).tmp/src; \
	cd $(E2E_DOCKER_CLI_DIR).tmp/src && cp vendor.mod go.mod && cp vendor.sum go.sum && rm -rf vendor && \
	CGO_ENABLED=0 $(GO) build -mod=mod -tags "osusergo netgo" \
		-ldflags "-X github.com/docker/cli/cli/version.Version=$(patsubst v%,%,$(DOCKER_CLI_VERSION))" \
		-o ../docker ./cmd/docker
	rm -rf $(E2E_DOCKER_CLI_DIR).tmp/src
	rm -rf $(E2E_DOCKER_CLI_DIR) && mv $(E2E_DOCKER_CLI_DIR).tmp $(E2E_DOCKER_CLI_DIR)

# Debian's runc (1.1) cannot start dockerd 29's containers (time namespace).
$(E2E_RUNC_DIR)/runc: | e2e-docker-packages
	@rm -rf $(E2E_RUNC_DIR).tmp && mkdir -p $(E2E_RUNC_DIR).tmp
	GOBIN=$(E2E_RUNC_DIR).tmp CGO_ENABLED=1 $(GO) install -tags "seccomp urfave_cli_no_docs" \
		github.com/opencontainers/runc@$(RUNC_VERSION)
	rm -rf $(E2E_RUNC_DIR) && mv $(E2E_RUNC_DIR).tmp $(E2E_RUNC_DIR)
