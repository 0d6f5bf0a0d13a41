#!/usr/bin/env bash
# Tests scripts/advisories.sh offline: a copy of the snapshot with one made-up
# advisory against a crate this workspace uses (humantime, every version) must
# fail the check and name the advisory; the same with deny.toml ignoring it (with
# a reason) must pass; the date of the snapshot is printed beside each verdict.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
T="$(mktemp -d -t prism-advisories-test.XXXXXX)"
trap 'rm -rf "$T"' EXIT
fail() { echo "test-advisories: FAIL: $*" >&2; exit 1; }
src=""
for dir in "${PRISM_ADVISORY_DB:-}" "$ROOT/../shared/rustsec-advisory-db" \
           "$ROOT/../../shared/rustsec-advisory-db" /work/shared/rustsec-advisory-db; do
    if [ -n "$dir" ] && [ -d "$dir/crates" ]; then src="$dir"; break; fi
done
[ -n "$src" ] || fail "no advisory snapshot found"
grep -q '^name = "humantime"$' "$ROOT/Cargo.lock" || fail "humantime is no longer in Cargo.lock: pick another crate"
cp -r "$src" "$T/db"
mkdir -p "$T/db/crates/humantime"
cat >"$T/db/crates/humantime/RUSTSEC-2099-0001.md" <<'MD'
```toml
[advisory]
id = "RUSTSEC-2099-0001"
package = "humantime"
date = "2099-01-01"
url = "https://example.org/made-up"
categories = ["memory-corruption"]

[versions]
patched = []
```

# A made-up advisory (scripts/tests/advisories.sh)
MD

out=$(PRISM_ADVISORY_DB="$T/db" "$ROOT/scripts/advisories.sh" 2>&1) && fail "a vulnerable dependency passed:\n$out"
grep -q "RUSTSEC-2099-0001" <<<"$out" || fail "the advisory is not named:\n$out"
grep -q "advisories: FAILED (offline: RustSec snapshot dated [0-9-]*" <<<"$out" || fail "no verdict with date:\n$out"

sed 's|^ignore = \[\]|ignore = [{ id = "RUSTSEC-2099-0001", reason = "made up by the test" }]|' \
    "$ROOT/deny.toml" >"$T/deny.toml"
grep -q RUSTSEC-2099-0001 "$T/deny.toml" || fail "could not write the ignore entry"
out=$(PRISM_ADVISORY_DB="$T/db" PRISM_DENY_CONFIG="$T/deny.toml" "$ROOT/scripts/advisories.sh" 2>&1) \
    || fail "an ignored advisory still failed:\n$out"
grep -q "advisories: ok (offline: RustSec snapshot dated" <<<"$out" || fail "no ok verdict:\n$out"
echo "test-advisories: ok (a vulnerable dependency fails lint, an ignore entry with a reason passes it)"
