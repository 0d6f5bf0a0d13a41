# Prism backend plugins: build, test, demo, images, dev loop. `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

.DEFAULT_GOAL := help

# ---- variables (override on the command line: make build VERSION=v1.2.3 REGISTRY=ghcr.io/acme)
# Every plugin declares itself in <dir>/plugin.toml (docs/adding-a-plugin.md): the
# plugin list and each plugin's facts come from there, never from a list kept here.
PLUGINS   := $(sort $(patsubst %/plugin.toml,%,$(wildcard */plugin.toml)))
# $(call manifest,PLUGIN,KEY): a top-level string or number of PLUGIN/plugin.toml.
manifest = $(shell sed -n 's/^$(2)[[:space:]]*=[[:space:]]*"\{0,1\}\([^"]*\)"\{0,1\}.*/\1/p' $(1)/plugin.toml | head -n1)
# Image tag (the original suite's `vX.Y.Z`): v + the workspace version unless given.
VERSION   ?= v$(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
REVISION  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
# OCI source label: where this checkout came from.
SOURCE_URL ?= $(shell git remote get-url origin 2>/dev/null || echo unknown)
REGISTRY  ?= prism
PODMAN    ?= podman
# Base images: empty = each plugin's declared `image_base` (distroless
# static-debian12 or cc-debian12; :debug-nonroot for debug). Set both to
# `scratch` where images cannot be pulled (the binaries are self-contained).
BASE_IMAGE       ?=
DEBUG_BASE_IMAGE ?=
# Image binaries: fully static glibc executables for the host triple, in their own
# target dir so they never invalidate the normal build. IMAGE_PROFILE=release
# (thin LTO, what ships) or fast (release without LTO, 16 codegen units: quicker
# to build on 2 cores; what the image tests use).
IMAGE_PROFILE     ?= release
TRIPLE            ?= $(shell rustc -vV | sed -n 's/^host: //p')
STATIC_TARGET_DIR ?= target/static
CA_BUNDLE         ?= /etc/ssl/certs/ca-certificates.crt
IMAGE_DIR         := target/images
STATIC_BIN_DIR    := $(STATIC_TARGET_DIR)/$(TRIPLE)/release
ifeq ($(IMAGE_PROFILE),fast)
STATIC_ENV := CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
endif
BUILD_ARGS := --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
              --build-arg SOURCE_URL=$(SOURCE_URL) \
              $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) \
              $(if $(DEBUG_BASE_IMAGE),--build-arg DEBUG_BASE_IMAGE=$(DEBUG_BASE_IMAGE))
# prism-watcher flags for `make watch` (e.g. WATCH_ARGS="--plugins redis").
WATCH_ARGS ?=

.PHONY: help deps build build-debug bins bins-debug test test-only test-faults lint fmt demo stack run-postgres run-kafka fuzz bench \
        run-redis clean static-bins images images-debug $(PLUGINS) $(PLUGINS:%=%-debug) \
        push sizes list watch validate test-images test-packaging clean-images \
        manifests new-plugin test-new-plugin plugins $(PLUGINS:%=run-%)

help: ## List the targets
	@grep -E '^[a-zA-Z_%-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'
	@echo "  run-PLUGIN       Run one plugin locally on its declared port ($(PLUGINS:%=run-%))"
	@echo "  variables: VERSION=$(VERSION) REGISTRY=$(REGISTRY) PODMAN=$(PODMAN) IMAGE_PROFILE=$(IMAGE_PROFILE)"
	@echo "             BASE_IMAGE=$(BASE_IMAGE) DEBUG_BASE_IMAGE=$(DEBUG_BASE_IMAGE) (empty = distroless defaults)"

deps: ## Install every tool the build, tests, demo and images need (idempotent)
	@scripts/install-deps.sh

bins: deps ## Release binaries: prism-postgres, prism-kafka, prism-redis, prism-watcher (target/release)
	$(CARGO) build --release --bins

bins-debug: deps ## Debug binaries (target/debug): what demo, stack and run-PLUGIN start
	$(CARGO) build --bins

test: deps ## Install what is needed and run every test against real servers
	@scripts/test.sh

test-only: ## Run the tests without the install step
	@scripts/test.sh

test-faults: deps ## Fault-injection and secret-leak suite only (builds the plugin binaries it spawns)
	$(CARGO) build --bins $(PLUGINS:%=-p prism-%)
	$(CARGO) nextest run -p prism-faults

lint: deps ## rustfmt check, clippy with warnings as errors, file/function size and import cycles, hadolint, cargo-deny (licences, bans, sources, advisories: network or the dated snapshot)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	python3 scripts/check-structure.py
	.venv/bin/hadolint Containerfiles/*.Containerfile $(wildcard $(PLUGINS:%=%/Containerfile))
	@command -v cargo-deny >/dev/null || $(CARGO) install --locked --quiet cargo-deny
	cargo-deny check licenses bans sources
	@# Advisories: the RustSec database from GitHub when reachable, else the shared
	@# snapshot (its date printed beside the verdict); vulnerable or unmaintained fails.
	@scripts/advisories.sh
	@scripts/tests/advisories.sh

fuzz: ## Run every cargo-fuzz target briefly (FUZZ_SECONDS, default 30)
	@scripts/fuzz.sh $(FUZZ_SECONDS)

bench: deps ## Plugin vs direct-backend benchmarks (redis-benchmark, pgbench) → BENCHMARKS.md (BENCH_ARGS=--quick for a smoke run)
	@scripts/bench.sh $(BENCH_ARGS)

fmt: ## Format the code
	$(CARGO) fmt --all

demo: bins-debug ## Start backends + the three plugins, call them with grpcurl, shut down cleanly
	$(CARGO) run -q -p prism-testkit --bin prism-demo

stack: bins-debug ## Like demo, but keep everything running until Ctrl-C
	$(CARGO) run -q -p prism-testkit --bin prism-demo -- --keep-running

plugins: ## List the plugins (from */plugin.toml): name, port, image base
	@$(foreach p,$(PLUGINS),printf '  %-12s %-6s %s\n' $(p) $(call manifest,$(p),port) $(or $(call manifest,$(p),image_base),static);)

# Runs one plugin on its declared port, with its backend named by the conventional env vars.
$(PLUGINS:%=run-%): run-%: bins-debug
	$(CARGO) run -q --bin prism-$* -- --grpc-port $(call manifest,$*,port)

manifests: ## Regenerate compose.yaml and deploy/kubernetes/ from the plugins' plugin.toml
	$(CARGO) run -q -p prism-xtask -- manifests

new-plugin: ## Write a new plugin crate from the skeleton: make new-plugin NAME=foo [PORT=9093]
	@test -n "$(NAME)" || { echo "usage: make new-plugin NAME=foo [PORT=9093]"; exit 2; }
	$(CARGO) run -q -p prism-xtask -- new-plugin $(NAME) $(if $(PORT),--port $(PORT))

watch: ## Dev loop: rebuild and restart the plugins on every source change (WATCH_ARGS=...)
	$(CARGO) run -q --release -p prism-watcher -- $(WATCH_ARGS)

# ---- images ---------------------------------------------------------------------

static-bins: ## Self-contained static plugin binaries (+ prism-probe) for the images (target/static)
	$(STATIC_ENV) RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release \
	    --target $(TRIPLE) --target-dir $(STATIC_TARGET_DIR) $(PLUGINS:%=--bin prism-%) --bin prism-probe

# Build context per plugin: only the binary, prism-probe, the CA bundle and the
# Containerfile rendered from the plugin's facts (small, no secrets). A plugin's
# own <dir>/Containerfile replaces the shared one.
$(IMAGE_DIR)/%/.staged: static-bins %/plugin.toml Containerfiles/plugin.Containerfile
	@mkdir -p $(IMAGE_DIR)/$*
	@if [ -f $*/Containerfile ]; then cp $*/Containerfile $(IMAGE_DIR)/$*/Containerfile; else \
	  sed -e 's|@NAME@|$*|g' -e 's|@PORT@|$(call manifest,$*,port)|g' \
	      -e 's|@BASE@|$(or $(call manifest,$*,image_base),static)-debian12|g' \
	      -e 's|@DESCRIPTION@|$(call manifest,$*,description)|g' \
	      Containerfiles/plugin.Containerfile > $(IMAGE_DIR)/$*/Containerfile; fi
	@install -m 0755 $(STATIC_BIN_DIR)/prism-$* $(IMAGE_DIR)/$*/prism-$*
	@install -m 0755 $(STATIC_BIN_DIR)/prism-probe $(IMAGE_DIR)/$*/prism-probe
	@install -m 0644 $(CA_BUNDLE) $(IMAGE_DIR)/$*/ca-certificates.crt
	@touch $@

build: $(PLUGINS) ## Production images of all plugins: REGISTRY/PLUGIN-plugin:VERSION and :latest

build-debug: $(PLUGINS:%=%-debug) ## Debug images of all plugins: REGISTRY/PLUGIN-plugin:debug and :VERSION-debug

images: build build-debug ## Production and debug images of all plugins

images-debug: build-debug

postgres: ## Production image prism/postgres-plugin:VERSION and :latest (same for kafka, redis)
$(PLUGINS): %: $(IMAGE_DIR)/%/.staged
	$(PODMAN) build -q --target production $(BUILD_ARGS) -f $(IMAGE_DIR)/$@/Containerfile \
	    -t $(REGISTRY)/$@-plugin:$(VERSION) -t $(REGISTRY)/$@-plugin:latest $(IMAGE_DIR)/$@

postgres-debug: ## Debug image prism/postgres-plugin:debug and :VERSION-debug (same for kafka, redis)
$(PLUGINS:%=%-debug): %-debug: $(IMAGE_DIR)/%/.staged
	$(PODMAN) build -q --target debug $(BUILD_ARGS) -f $(IMAGE_DIR)/$*/Containerfile \
	    -t $(REGISTRY)/$*-plugin:debug -t $(REGISTRY)/$*-plugin:$(VERSION)-debug $(IMAGE_DIR)/$*

push: ## Push every tag of every plugin image to REGISTRY
	@for p in $(PLUGINS); do for t in $(VERSION) latest debug $(VERSION)-debug; do \
	    echo "push $(REGISTRY)/$$p-plugin:$$t"; $(PODMAN) push $(REGISTRY)/$$p-plugin:$$t || exit 1; \
	done; done

sizes: ## Sizes of the plugin images and of the static binaries in them
	@for p in $(PLUGINS); do for t in $(VERSION) $(VERSION)-debug; do \
	    s=$$($(PODMAN) image inspect --format '{{.Size}}' $(REGISTRY)/$$p-plugin:$$t 2>/dev/null) \
	        && awk -v n="$(REGISTRY)/$$p-plugin:$$t" -v s="$$s" 'BEGIN{printf "  %-36s %6.1f MiB\n", n, s/1048576}' \
	        || printf '  %-36s (not built)\n' "$(REGISTRY)/$$p-plugin:$$t"; \
	done; \
	b=$(STATIC_BIN_DIR)/prism-$$p; [ -f $$b ] && awk -v n="$$b" -v s="$$(stat -c %s $$b)" 'BEGIN{printf "  %-36s %6.1f MiB\n", n, s/1048576}'; \
	done; true

list: ## List the plugin images present locally
	@$(PODMAN) images --filter 'reference=$(REGISTRY)/*-plugin' \
	    --format '{{.Repository}}:{{.Tag}}  {{.ID}}  {{.Size}}  {{.CreatedSince}}'

clean-images: ## Remove the plugin images and the staged build contexts
	-@for p in $(PLUGINS); do for t in $(VERSION) latest debug $(VERSION)-debug; do \
	    $(PODMAN) rmi -f $(REGISTRY)/$$p-plugin:$$t >/dev/null 2>&1; done; done
	rm -rf $(IMAGE_DIR)

# ---- packaging tests ---------------------------------------------------------------

validate: ## Validate compose.yaml (compose spec) and deploy/kubernetes (Kubernetes OpenAPI)
	@scripts/validate-manifests.sh

test-images: ## Build every image FROM scratch, inspect it, run it against real backends
	@scripts/test-images.sh

test-new-plugin: ## The SDK promise: generate a plugin in a scratch copy; it builds, serves, passes conformance, is in compose/k8s, the watcher rebuilds it, its image runs
	@scripts/test-new-plugin.sh

test-packaging: validate test-images ## validate + test-images (what CI runs after `make test`)

clean: ## Remove build output
	$(CARGO) clean
