#!/usr/bin/env bash
# Renders envoy/envoy.yaml.tmpl (strict: every transcoded service must be in the descriptor set) into a
# temporary file and runs `envoy --mode validate` on it. Exits non-zero on any problem.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/env.sh"

PY="$ROOT_DIR/.venv/bin/python"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if [ ! -f "$JWT_JWKS_FILE" ]; then
    # Envoy reads the JWKS while loading the config; use a throwaway key pair before stack-up made one.
    export JWT_JWKS_FILE="$tmp/jwks.json" JWT_PRIVATE_KEY_FILE="$tmp/private.pem"
    "$PY" "$ROOT_DIR/scripts/lib/stack_tools.py" keys >/dev/null
fi

"$PY" "$ROOT_DIR/scripts/render-envoy.py" --strict -o "$tmp/envoy.yaml"
if ! out="$(envoy --mode validate -c "$tmp/envoy.yaml" --disable-hot-restart 2>&1)"; then
    printf '%s\n' "$out" >&2
    echo "envoy-validate: INVALID config (rendered from envoy/envoy.yaml.tmpl)" >&2
    exit 1
fi
echo "envoy-validate: OK"
