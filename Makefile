# Prism backend plugins: build, test, demo. `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

.DEFAULT_GOAL := help

.PHONY: help deps build build-debug test test-only lint fmt demo stack run-postgres run-kafka run-redis clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

deps: ## Install every tool the build, tests and demo need (idempotent)
	@scripts/install-deps.sh

build: deps ## Release binaries: prism-postgres, prism-kafka, prism-redis, prism-watcher
	$(CARGO) build --release --bins

build-debug: deps
	$(CARGO) build --bins

test: deps ## Install what is needed and run every test against real servers
	@scripts/test.sh

test-only: ## Run the tests without the install step
	@scripts/test.sh

lint: deps ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

demo: build-debug ## Start backends + the three plugins, call them with grpcurl, shut down cleanly
	$(CARGO) run -q -p prism-testkit --bin prism-demo

stack: build-debug ## Like demo, but keep everything running until Ctrl-C
	$(CARGO) run -q -p prism-testkit --bin prism-demo -- --keep-running

run-postgres: build-debug ## Run prism-postgres locally (DATABASE_URL from the environment)
	$(CARGO) run -q --bin prism-postgres -- --grpc-port 9090

run-kafka: build-debug ## Run prism-kafka locally (KAFKA_BROKERS from the environment)
	$(CARGO) run -q --bin prism-kafka -- --grpc-port 9091

run-redis: build-debug ## Run prism-redis locally (REDIS_ADDRESS from the environment)
	$(CARGO) run -q --bin prism-redis -- --grpc-port 9092

clean: ## Remove build output
	$(CARGO) clean
