#!/usr/bin/env bash
# Runs every cargo-fuzz target for a short time (default 30 s each; first
# argument overrides). Stable toolchain: RUSTC_BOOTSTRAP lets cargo-fuzz pass
# its -Z flags; no sanitizer is needed for forbid(unsafe) code, panics are
# what we look for. A crash leaves its input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"
seconds="${1:-30}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked --quiet cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1
# New inputs go to a scratch dir (libFuzzer writes to the first corpus dir); the
# committed corpus is only read, so a run leaves the tree clean.
scratch="$(mktemp -d -t prism-fuzz.XXXXXX)"
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo fuzz list); do
    echo "fuzz: $target for ${seconds}s"
    mkdir -p "$scratch/$target"
    cargo fuzz run --sanitizer none -O "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 2>&1 \
        | grep -E "^(stat::number_of_executed_units|Done|==|SUMMARY|thread)" || true
    # cargo fuzz exits non-zero on a crash; the pipeline above hides it, so check.
    if compgen -G "artifacts/$target/crash-*" >/dev/null; then
        echo "fuzz: $target crashed; inputs in fuzz/artifacts/$target/" >&2
        exit 1
    fi
done
