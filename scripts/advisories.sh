#!/usr/bin/env bash
# `cargo deny check advisories` for real (run by `make lint`): against the RustSec
# database fetched from GitHub when the network allows, else against the shared
# snapshot (PRISM_ADVISORY_DB, else ../shared/rustsec-advisory-db next to the
# checkout), printing which database and its date beside the verdict. A
# vulnerable, unmaintained or unsound dependency fails, unless deny.toml's
# [advisories] ignore lists it with a written reason. No database at all fails too.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CONFIG="${PRISM_DENY_CONFIG:-$ROOT/deny.toml}"

# Every exception carries its written reason.
python3 - "$CONFIG" <<'PY' || exit 1
import sys, tomllib
ignore = tomllib.load(open(sys.argv[1], "rb")).get("advisories", {}).get("ignore", [])
bad = [e if isinstance(e, str) else e.get("id", "?") for e in ignore
       if isinstance(e, str) or not str(e.get("reason", "")).strip()]
if bad:
    sys.exit(f"advisories: FAILED: deny.toml ignores {', '.join(bad)} without a reason")
PY

if [ -z "${PRISM_ADVISORY_DB:-}" ] && timeout 60 cargo-deny fetch db >/dev/null 2>&1; then
    db=$(ls -td "${CARGO_HOME:-$HOME/.cargo}"/advisory-dbs/*/ 2>/dev/null | head -n1)
    date=$(git -C "$db" show -s --format=%cs HEAD 2>/dev/null || echo unknown)
    if cargo-deny --config "$CONFIG" check advisories; then verdict=ok; else verdict=FAILED; fi
    echo "advisories: $verdict (RustSec database fetched from GitHub, newest advisory commit $date)"
    [ "$verdict" = ok ]
    exit
fi

snapshot=""
for dir in "${PRISM_ADVISORY_DB:-}" "$ROOT/../shared/rustsec-advisory-db" \
           "$ROOT/../../shared/rustsec-advisory-db" /work/shared/rustsec-advisory-db; do
    if [ -n "$dir" ] && [ -d "$dir/crates" ]; then snapshot="$(cd "$dir" && pwd)"; break; fi
done
if [ -z "$snapshot" ]; then
    echo "advisories: FAILED: the RustSec database cannot be fetched and no snapshot was found" >&2
    echo "  (set PRISM_ADVISORY_DB to a copy of github.com/rustsec/advisory-db)" >&2
    exit 1
fi
date=$(sed -n 's/.*dated \([0-9-]*\).*/\1/p' "$snapshot/SNAPSHOT.md" 2>/dev/null | head -n1)
date=${date:-unknown}

# cargo-deny opens its database as a git repository under db-path, in the
# directory it names after the default URL; the snapshot is a plain copy.
work="$(mktemp -d -t prism-advisories.XXXXXX)"
trap 'rm -rf "$work"' EXIT
repo="$work/db/advisory-db-3157b0e258782691"
mkdir -p "$repo"
cp -r "$snapshot/." "$repo/"
(cd "$repo" && git init -q && git add -A \
    && GIT_AUTHOR_DATE="${date}T00:00:00Z" GIT_COMMITTER_DATE="${date}T00:00:00Z" \
       git -c user.name=snapshot -c user.email=snapshot@localhost -c commit.gpgsign=false \
       commit -q -m "RustSec snapshot $date") || { echo "advisories: FAILED: cannot stage the snapshot" >&2; exit 1; }
# deny.toml with db-path pointing there (inserted under its [advisories] table).
grep -q '^\[advisories\]' "$CONFIG" || { echo "advisories: FAILED: $CONFIG has no [advisories] table" >&2; exit 1; }
sed "s|^\[advisories\]|[advisories]\ndb-path = \"$work/db\"|" "$CONFIG" >"$work/deny.toml"

if cargo-deny --offline --config "$work/deny.toml" check advisories; then verdict=ok; else verdict=FAILED; fi
echo "advisories: $verdict (offline: RustSec snapshot dated $date, $snapshot)"
[ "$verdict" = ok ]
