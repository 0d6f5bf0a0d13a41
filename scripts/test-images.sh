#!/usr/bin/env bash
# Image tests (DESIGN.md §7): builds every plugin image, production and debug,
# FROM scratch (these machines cannot pull the distroless bases, so the binaries
# must be self-contained), lints the Containerfiles, inspects each image (user
# 65532, entrypoint, exposed port, labels, no config file or secret inside), then
# runs each one read-only as 65532 against real backends (watcher/tests/images.rs)
# and prints the sizes. Skipped, with a message, only where podman is absent.
#
# IMAGE_PROFILE=fast (default here) builds the binaries without LTO, which is
# quicker on 2 cores; IMAGE_PROFILE=release tests exactly what ships.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v podman >/dev/null 2>&1; then
    echo "test-images: SKIPPED: podman is not installed (scripts/install-deps.sh installs it)"
    exit 0
fi

export IMAGE_PROFILE="${IMAGE_PROFILE:-fast}"
# The README's own example: `make build VERSION=v9.9.9 REGISTRY=example.org/prism`.
REGISTRY="${PRISM_IMAGE_REGISTRY:-example.org/prism}"
VERSION="${PRISM_IMAGE_TAG:-v9.9.9}"
MAKE_VARS=(REGISTRY="$REGISTRY" VERSION="$VERSION" BASE_IMAGE=scratch DEBUG_BASE_IMAGE=scratch)
# Every plugin that declares itself (*/plugin.toml), with its declared port.
PLUGINS=()
declare -A PORTS=()
for manifest in */plugin.toml; do
    p=${manifest%/plugin.toml}
    PLUGINS+=("$p")
    PORTS[$p]=$(sed -n 's/^port[[:space:]]*=[[:space:]]*\([0-9]*\).*/\1/p' "$manifest")
done
failures=0
fail() { echo "test-images: FAIL: $*" >&2; failures=$((failures + 1)); }

echo "== hadolint Containerfiles/ and plugins' own Containerfiles"
.venv/bin/hadolint Containerfiles/*.Containerfile $(ls */Containerfile 2>/dev/null)

# `make build` makes exactly the production tags, `make build-debug` exactly the
# debug ones (the original suite's README: :latest, :vX, :debug, :vX-debug).
PROD_TAGS=("$VERSION" latest)
DEBUG_TAGS=(debug "$VERSION-debug")
present() { podman image exists "$REGISTRY/$1-plugin:$2"; }
for p in "${PLUGINS[@]}"; do for tag in "${PROD_TAGS[@]}" "${DEBUG_TAGS[@]}"; do
    podman rmi -f "$REGISTRY/$p-plugin:$tag" >/dev/null 2>&1 || true
done; done

echo "== make build ${MAKE_VARS[*]} (IMAGE_PROFILE=$IMAGE_PROFILE)"
started=$(date +%s)
make -s build "${MAKE_VARS[@]}"
for p in "${PLUGINS[@]}"; do
    for tag in "${PROD_TAGS[@]}"; do present "$p" "$tag" || fail "make build: $REGISTRY/$p-plugin:$tag missing"; done
    for tag in "${DEBUG_TAGS[@]}"; do ! present "$p" "$tag" || fail "make build: made a debug tag $REGISTRY/$p-plugin:$tag"; done
done
echo "== make build-debug"
make -s build-debug "${MAKE_VARS[@]}"
for p in "${PLUGINS[@]}"; do for tag in "${DEBUG_TAGS[@]}"; do
    present "$p" "$tag" || fail "make build-debug: $REGISTRY/$p-plugin:$tag missing"
done; done
[ "$failures" -eq 0 ] || { echo "test-images: $failures tag failure(s)" >&2; exit 1; }
echo "   built in $(( $(date +%s) - started ))s: ${PROD_TAGS[*]} ${DEBUG_TAGS[*]} for ${PLUGINS[*]}"

echo "== inspecting"
for p in "${PLUGINS[@]}"; do
    for tag in "${PROD_TAGS[@]}" "${DEBUG_TAGS[@]}"; do
        ref="$REGISTRY/$p-plugin:$tag"
        fmt='{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.ExposedPorts}}|{{index .Config.Labels "org.opencontainers.image.version"}}|{{index .Config.Labels "org.opencontainers.image.source"}}|{{index .Config.Labels "org.opencontainers.image.licenses"}}|{{json .Config.Env}}'
        info=$(podman image inspect --format "$fmt" "$ref") || { fail "$ref missing"; continue; }
        IFS='|' read -r user entrypoint ports version source licence env <<<"$info"
        [ "$user" = "65532:65532" ] || fail "$ref: user is '$user', want 65532:65532"
        [ "$entrypoint" = "[\"/usr/local/bin/prism-$p\"]" ] || fail "$ref: entrypoint $entrypoint"
        [[ "$ports" == *"\"${PORTS[$p]}/tcp\""* ]] || fail "$ref: exposed ports $ports, want ${PORTS[$p]}/tcp"
        [[ "$version" == "$VERSION"* ]] || fail "$ref: version label '$version'"
        [ -n "$source" ] && [ "$licence" = "Apache-2.0" ] || fail "$ref: source/licence labels"
        if grep -qiE 'PASSWORD|SECRET|TOKEN|DATABASE_URL|REDIS_ADDRESS|KAFKA_BROKERS|PRISM_PLUGIN_CONFIG' <<<"$env"; then
            fail "$ref: configuration baked into Env: $env"
        fi
        # The filesystem: exactly the binary and the CA bundle (plus what podman
        # itself adds to every container); no config file.
        cid=$(podman create -q "$ref")
        files=$(podman export "$cid" | tar -t | grep -vE '/$' | sort)
        podman rm -f "$cid" >/dev/null
        want=$(printf '%s\n' etc/ssl/certs/ca-certificates.crt "usr/local/bin/prism-$p" usr/local/bin/prism-probe)
        extra=$(comm -23 <(echo "$files") <(printf '%s\n' "$want" etc/hostname etc/hosts etc/resolv.conf run/.containerenv | sort))
        missing=$(comm -13 <(echo "$files") <(echo "$want" | sort))
        [ -z "$extra" ] || fail "$ref: unexpected files: $extra"
        [ -z "$missing" ] || fail "$ref: missing files: $missing"
    done
    echo "   $p: user 65532:65532, entrypoint, port ${PORTS[$p]}, labels, only binary, probe, CA bundle"
done
[ "$failures" -eq 0 ] || { echo "test-images: $failures inspection failure(s)" >&2; exit 1; }

echo "== running the images against real backends"
PRISM_IMAGE_REGISTRY="$REGISTRY" PRISM_IMAGE_TAG="$VERSION" \
    cargo test -q -p prism-watcher --test images -- --ignored --test-threads 1 --nocapture 2>&1 | grep -vE "^\[prism-|^\{"

echo "== sizes"
make -s sizes "${MAKE_VARS[@]}"
