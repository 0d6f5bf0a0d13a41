#!/usr/bin/env bash
# Runs every test in the workspace against real servers (the harness starts
# them). Uses cargo-nextest when present (one process per test, parallel),
# else cargo test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The installer, against shims (touches nothing on this machine; < 1 s).
scripts/tests/install-deps.sh

# Examples are test fixtures (core's tests spawn examples/test_plugin).
cargo build --workspace --all-targets --quiet

if cargo nextest --version >/dev/null 2>&1; then
    profile=default
    if [ "${CI:-}" = "true" ]; then profile=ci; fi
    # immediate-final: a failed first try that passes on retry (FLAKY) still
    # shows its output, so flakiness can be diagnosed from the CI log.
    exec cargo nextest run --workspace --profile "$profile" --failure-output immediate-final
else
    exec cargo test --workspace --no-fail-fast
fi
