#!/usr/bin/env bash
# `make bench`: builds the release plugin binaries and the benchmark suite, then
# runs every plugin against harness-started PostgreSQL / Redis / Kafka servers
# next to the backends' own tools (redis-benchmark, pgbench) and writes
# BENCHMARKS.md in the workspace root (keeping its hand-written Analysis).
#
#   scripts/bench.sh                 # full run (~10 s per scenario, ~4-5 min)
#   scripts/bench.sh --quick         # 3 s per scenario (CI smoke; it too rewrites
#                                    # BENCHMARKS.md unless --out names another file)
#   scripts/bench.sh --only redis --out /tmp/b.md
#
# Every argument is passed to bench-suite (`--help` lists them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release --bins -p prism-postgres -p prism-redis -p prism-bench
# prism-kafka is measured when it builds (start time, RSS; Publish once served).
if ! cargo build --release --bins -p prism-kafka; then
    echo "bench: prism-kafka did not build; benchmarking without it" >&2
fi

target_dir="${CARGO_TARGET_DIR:-target}"
exec "$target_dir/release/bench-suite" "$@"
