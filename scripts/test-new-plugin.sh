#!/usr/bin/env bash
# The SDK promise, proven (issue #14, docs/adding-a-plugin.md): in a temporary
# copy of the workspace, `make new-plugin NAME=demo-kv` writes a plugin, and
#   1. git status shows changes only where the guide says (the new crate, the
#      workspace members, the generated compose.yaml and deploy/kubernetes/);
#   2. it builds, rustfmt- and clippy-clean, and its own tests pass: lifecycle, every health
#      status, reflection, and the KeyValue conformance checks (testkit:
#      basic, namespaces, TTL, batch); its config.yaml passes xtask/tests/config_files.rs
#      (every key with its default and a comment, accepted as shipped);
#   3. compose.yaml and deploy/kubernetes/ include it and validate;
#   4. the watcher builds it, runs it, and rebuilds and restarts it on an edit;
#   5. its image builds FROM scratch, runs read-only as 65532 and serves
#      (skipped, with a message, where podman is absent).
# The copy shares this checkout's target/ (dependencies are not rebuilt).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
NAME=demo-kv
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
export CARGO_TERM_COLOR=never

tmp=$(mktemp -d)
watcher_pid=
cleanup() {
    [ -n "$watcher_pid" ] && kill "$watcher_pid" 2>/dev/null && wait "$watcher_pid" 2>/dev/null
    podman rm -f "prism-new-plugin-test" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "test-new-plugin: FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }

step "copying the workspace (tracked files as they are now) to $tmp/ws"
mkdir -p "$tmp/ws"
git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents -P {} "$tmp/ws/" 2>/dev/null || true
ln -s "$ROOT/.venv" "$tmp/ws/.venv"
cd "$tmp/ws"
git init -q && git add -A && git -c user.email=ci@localhost -c user.name=ci commit -qm base

step "make new-plugin NAME=$NAME"
make -s new-plugin NAME=$NAME

step "git status: only the places docs/adding-a-plugin.md names"
changed=$(git status --porcelain --untracked-files=all | awk '{print $2}' | sort)
allowed='^(demo-kv/.*|Cargo\.toml|Cargo\.lock|compose\.yaml|deploy/kubernetes/(static-secrets/)?(common|demo-kv)\.yaml)$'
unexpected=$(grep -vE "$allowed" <<<"$changed" || true)
[ -z "$unexpected" ] || fail "the generator changed files the guide does not name: $unexpected"
for want in demo-kv/Cargo.toml demo-kv/plugin.toml demo-kv/config.yaml demo-kv/src/plugin.rs demo-kv/README.md \
            Cargo.toml compose.yaml deploy/kubernetes/demo-kv.yaml; do
    grep -qx "$want" <<<"$changed" || fail "$want was not written"
done
echo "   changed: $(tr '\n' ' ' <<<"$changed")"

step "build, clippy, the plugin's own tests (lifecycle, health, reflection, KV conformance)"
cargo build -q -p prism-$NAME --all-targets
cargo fmt -p prism-$NAME -- --check
cargo clippy -q -p prism-$NAME --all-targets -- -D warnings
cargo test -q -p prism-$NAME 2>&1 | grep -E '^test result|passed|failed' | tail -5
cargo test -q -p prism-$NAME >/dev/null 2>&1 || fail "prism-$NAME tests"
cargo run -q -p prism-xtask -- manifests --check

step "its config.yaml: every key with its default and a comment, accepted as shipped"
PRISM_CONFIG_FILES_ONLY=$NAME cargo test -q -p prism-xtask --test config_files >"$tmp/config.log" 2>&1 \
    || { cat "$tmp/config.log"; fail "$NAME/config.yaml (xtask/tests/config_files.rs)"; }
grep -E '^test result' "$tmp/config.log" | tail -1

step "compose.yaml and deploy/kubernetes include it and validate"
grep -q "^  $NAME-plugin:" compose.yaml || fail "compose.yaml has no $NAME-plugin service"
port=$(sed -n 's/^port[[:space:]]*=[[:space:]]*\([0-9]*\).*/\1/p' $NAME/plugin.toml)
grep -q "containerPort: $port" deploy/kubernetes/$NAME.yaml || fail "Kubernetes manifest lacks port $port"
make -s validate

step "the watcher builds, runs and on an edit rebuilds and restarts it"
watch_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cargo build -q -p prism-watcher
"$CARGO_TARGET_DIR/debug/prism-watcher" --plugins $NAME --port "$NAME=$watch_port" >"$tmp/watcher.log" 2>&1 &
watcher_pid=$!
wait_ready() { # count: wait until "plugin ready" was logged that many times
    for _ in $(seq 1 600); do
        [ "$(grep -c 'plugin ready' "$tmp/watcher.log" || true)" -ge "$1" ] && return 0
        kill -0 "$watcher_pid" 2>/dev/null || { cat "$tmp/watcher.log"; fail "watcher exited"; }
        sleep 0.5
    done
    cat "$tmp/watcher.log"; fail "watcher: plugin not ready ($1)"
}
grpc_health_message() {
    "$ROOT/.venv/bin/grpcurl" -plaintext "127.0.0.1:$watch_port" prism.interfaces.LifecycleInterface/HealthCheck
}
wait_ready 1
grpc_health_message | grep -q 'in-memory store ready' || fail "the watched plugin does not answer"
sed -i 's/"in-memory store ready"/"in-memory store ready (edited)"/' $NAME/src/plugin.rs
wait_ready 2
grpc_health_message | grep -q 'in-memory store ready (edited)' || fail "the edit is not served after the rebuild"
kill "$watcher_pid"; wait "$watcher_pid" 2>/dev/null || true; watcher_pid=
echo "   rebuilt and restarted on an edit: $(grep -c 'build succeeded' "$tmp/watcher.log") builds"

step "its image, FROM scratch, read-only as 65532"
if ! command -v podman >/dev/null 2>&1; then
    echo "   SKIPPED: podman is not installed"
else
    make -s $NAME REGISTRY=localhost/prism-test VERSION=0.0.0-test BASE_IMAGE=scratch \
        IMAGE_PROFILE=fast STATIC_TARGET_DIR="$ROOT/target/static" PLUGINS=$NAME
    ref=localhost/prism-test/$NAME-plugin:0.0.0-test
    entry=$(podman image inspect --format '{{.Config.User}} {{json .Config.Entrypoint}} {{json .Config.ExposedPorts}}' "$ref")
    [ "$entry" = "65532:65532 [\"/usr/local/bin/prism-$NAME\"] {\"$port/tcp\":{}}" ] || fail "image config: $entry"
    img_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    podman --runtime runc run -d --name prism-new-plugin-test --read-only --user 65532:65532 \
        --network host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
        "$ref" --grpc-port "$img_port" >/dev/null
    for _ in $(seq 1 60); do
        podman exec prism-new-plugin-test /usr/local/bin/prism-probe --port "$img_port" >/dev/null 2>&1 && break
        sleep 0.5
    done
    podman exec prism-new-plugin-test /usr/local/bin/prism-probe --port "$img_port" \
        || { podman logs prism-new-plugin-test; fail "the image does not serve"; }
    podman stop -t 20 prism-new-plugin-test >/dev/null
    code=$(podman inspect --format '{{.State.ExitCode}}' prism-new-plugin-test)
    [ "$code" = 0 ] || fail "the container exited $code on SIGTERM"
    podman rmi -f "$ref" localhost/prism-test/$NAME-plugin:latest >/dev/null 2>&1 || true
    echo "   image served and exited 0"
fi

echo "test-new-plugin: ok"
