#!/usr/bin/env bash
# Lists (and then ends) the processes still alive that carry PRISM_TEST_RUN=$1 in
# their environment: scripts/test.sh exports a fresh marker before running the
# tests, every process a test starts inherits it (no test clears the
# environment), so whatever still has it after the run was leaked by a harness.
# Exit 1 if any was found. Waits up to $2 seconds (default 10) for stragglers
# that are still shutting down.
set -euo pipefail
marker="PRISM_TEST_RUN=$1"
grace="${2:-10}"
# This script's own helpers (tr, sed, subshells) must not carry the marker.
unset PRISM_TEST_RUN

leaked() {
    local pid environ state
    for environ in /proc/[0-9]*/environ; do
        pid=${environ#/proc/}; pid=${pid%/environ}
        [ "$pid" = "$$" ] || [ "$pid" = "$PPID" ] && continue
        # Zombies are dead already (their new parent has not reaped them yet).
        state=$(sed -n 's/^[0-9]* (.*) \(.\) .*/\1/p' "/proc/$pid/stat" 2>/dev/null) || continue
        [ -n "$state" ] && [ "$state" != Z ] || continue
        { tr '\0' '\n' <"$environ"; } 2>/dev/null | grep -qxF "$marker" || continue
        # Not this script's ancestors (make, test.sh) nor its own subshells.
        is_ancestor "$pid" && continue
        descends_from_self "$pid" && continue
        echo "$pid"
    done
}
parent_of() { sed -n 's/^PPid:[[:space:]]*//p' "/proc/$1/status" 2>/dev/null; }
descends_from_self() {
    local p=$1
    while [ -n "$p" ] && [ "$p" -gt 1 ]; do
        [ "$p" = "$$" ] && return 0
        p=$(parent_of "$p")
    done
    return 1
}
is_ancestor() {
    local p=$$
    while [ "$p" -gt 1 ]; do
        [ "$p" = "$1" ] && return 0
        p=$(sed -n 's/^PPid:[[:space:]]*//p' "/proc/$p/status" 2>/dev/null) || return 1
        [ -n "$p" ] || return 1
    done
    return 1
}

deadline=$(( $(date +%s) + grace ))
pids=$(leaked)
while [ -n "$pids" ] && [ "$(date +%s)" -lt "$deadline" ]; do
    sleep 1
    pids=$(leaked)
done
[ -z "$pids" ] && exit 0
echo "leaked-processes: these processes started by the tests outlived them:" >&2
for pid in $pids; do
    echo "  pid $pid: $({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null || echo '(exited meanwhile)')" >&2
done
# Ours to end (they carry this run's marker), so the machine is clean again.
for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
exit 1
