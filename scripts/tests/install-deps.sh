#!/usr/bin/env bash
# Tests scripts/install-deps.sh without touching the machine: apt-get, dpkg-query,
# sudo, systemctl and service are shims on PATH that log their calls. Checks that
#  - a service whose package was already installed is never stopped or disabled;
#  - the service of a package the script installed is, and the package is recorded;
#  - no sudo is used when running as root (and sudo is used otherwise);
#  - a second run on the now-complete machine installs and stops nothing, prints nothing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
T="$(mktemp -d -t prism-install-test.XXXXXX)"
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/bin" "$T/state"
LOG="$T/calls"
fail() { echo "test-install-deps: FAIL: $*" >&2; echo "--- calls ---" >&2; cat "$LOG" >&2; exit 1; }

# The fake machine: every package installed except those listed in $T/absent
# (apt-get install removes them from that list, as a real install would).
printf '%s\n' redis-server kcat >"$T/absent"
cat >"$T/bin/dpkg-query" <<SH
#!/usr/bin/env bash
pkg="\${@: -1}"
grep -qx "\$pkg" "$T/absent" && exit 1
printf 'install ok installed'
SH
cat >"$T/bin/apt-get" <<SH
#!/usr/bin/env bash
echo "apt-get \$*" >>"$LOG"
if [ "\$1" = install ]; then for a in "\$@"; do sed -i "/^\$a\\\$/d" "$T/absent"; done; fi
SH
for tool in systemctl service; do
    printf '#!/usr/bin/env bash\necho "%s $*" >>"%s"\n' "$tool" "$LOG" >"$T/bin/$tool"
done
# sudo logs itself, then runs the command.
printf '#!/usr/bin/env bash\necho "sudo $1" >>"%s"\nexec "$@"\n' "$LOG" >"$T/bin/sudo"
# id: root or not, as the case wants.
printf '#!/usr/bin/env bash\n[ "$1" = -u ] && { echo "${FAKE_UID:-0}"; exit 0; }\nexec /usr/bin/id "$@"\n' >"$T/bin/id"
chmod +x "$T/bin"/*

run() { env PATH="$T/bin:$PATH" XDG_STATE_HOME="$T/state" PRISM_VENV="$ROOT/.venv" "$@" "$ROOT/scripts/install-deps.sh"; }

: >"$LOG"
out=$(run FAKE_UID=0 2>&1) || fail "first run failed: $out"
[ -z "$out" ] || fail "first run not quiet: $out"
grep -q "apt-get install .*redis-server" "$LOG" || fail "redis-server was not installed"
grep -q "systemctl disable --now redis-server" "$LOG" || fail "the installed redis-server service was not disabled"
! grep -q "postgresql" "$LOG" || fail "the pre-existing postgresql was touched"
! grep -q "^sudo" "$LOG" || fail "sudo used while root"
[ "$(sort "$T/state/prism/installed-packages" | tr '\n' ' ')" = "kcat redis-server " ] \
    || fail "recorded: $(cat "$T/state/prism/installed-packages")"

: >"$LOG"
out=$(run FAKE_UID=0 2>&1) || fail "second run failed: $out"
[ -z "$out" ] && [ ! -s "$LOG" ] || fail "second run was not a no-op: $out"

# Not root: the same install goes through sudo.
printf '%s\n' redis-server >"$T/absent"
: >"$LOG"
run FAKE_UID=1000 >/dev/null 2>&1 || fail "non-root run failed"
grep -q "^sudo apt-get" "$LOG" || fail "sudo not used when not root"
echo "test-install-deps: ok (only what it installed is stopped, no sudo as root, idempotent, quiet)"
