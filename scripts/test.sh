#!/usr/bin/env bash
# Runs every test in the workspace against real servers (the harness starts
# them). Uses cargo-nextest when present (one process per test, parallel),
# else cargo test. Fails, too, when any process the tests started is still
# alive afterwards (scripts/leaked-processes.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The installer, against shims (touches nothing on this machine; < 1 s).
scripts/tests/install-deps.sh

# Examples are test fixtures (core's tests spawn examples/test_plugin).
cargo build --workspace --all-targets --quiet

# Every process the tests start inherits this marker; the leak check looks for it.
export PRISM_TEST_RUN="run-$$-$(date +%s%N)"
status=0
if cargo nextest --version >/dev/null 2>&1; then
    profile=default
    if [ "${CI:-}" = "true" ]; then profile=ci; fi
    # immediate-final: a failed first try that passes on retry (FLAKY) still
    # shows its output, so flakiness can be diagnosed from the CI log.
    cargo nextest run --workspace --profile "$profile" --failure-output immediate-final || status=$?
else
    cargo test --workspace --no-fail-fast || status=$?
fi
scripts/leaked-processes.sh "$PRISM_TEST_RUN" || status=1
exit "$status"
