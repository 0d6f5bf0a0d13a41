#!/usr/bin/env bash
# Validates the deployment manifests offline: compose.yaml against the Compose
# Specification JSON schema (vendored by check-jsonschema) and through
# podman-compose's own parser; deploy/kubernetes/*.yaml against the Kubernetes
# OpenAPI schemas bundled with kubernetes-validate (--strict: unknown fields fail).
# Each validator is first shown a broken document, so a validator that accepts
# anything cannot pass this check.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${PRISM_VENV:-.venv}"
for tool in check-jsonschema podman-compose kubernetes-validate; do
    [ -x "$VENV/bin/$tool" ] || { echo "validate: $VENV/bin/$tool missing; run scripts/install-deps.sh" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

expect_rejected() { # what, command...
    local what=$1; shift
    if "$@" >"$tmp/out" 2>&1; then
        echo "validate: the validator accepted a broken $what; it checks nothing" >&2
        cat "$tmp/out" >&2
        exit 1
    fi
}

printf 'services:\n  x:\n    image: a\n    depends_on:\n      y: { condition: sometimes }\n' >"$tmp/bad-compose.yaml"
expect_rejected compose.yaml "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$tmp/bad-compose.yaml"
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec compose.yaml
"$VENV/bin/podman-compose" -f compose.yaml config >"$tmp/compose.out" 2>&1 \
    || { cat "$tmp/compose.out" >&2; echo "validate: podman-compose config failed" >&2; exit 1; }
echo "compose.yaml: valid (compose-spec schema, podman-compose config)"

printf 'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  selector: {}\n  template:\n    spec:\n      containers:\n        - name: x\n          livenessProbe: {grpc: {port: "nine"}}\n' >"$tmp/bad-k8s.yaml"
expect_rejected "Kubernetes manifest" "$VENV/bin/kubernetes-validate" --strict --quiet "$tmp/bad-k8s.yaml"
"$VENV/bin/kubernetes-validate" --strict --quiet deploy/kubernetes/*.yaml deploy/kubernetes/static-secrets/*.yaml
echo "deploy/kubernetes: $(ls deploy/kubernetes/*.yaml deploy/kubernetes/static-secrets/*.yaml | wc -l) files valid (Kubernetes OpenAPI schemas of kubernetes-validate $("$VENV/bin/kubernetes-validate" --version 2>/dev/null | head -1 || true), strict)"
