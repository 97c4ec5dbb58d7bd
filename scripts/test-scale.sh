#!/usr/bin/env bash
# `make test-scale`: the scale tests (pytest marker `scale`) against a fresh local stack, stopped after.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/env.sh"
cd "$ROOT_DIR"
trap 'bash scripts/stack-down.sh >/dev/null 2>&1 || true' EXIT
bash scripts/stack-up.sh
python -m alembic upgrade heads
python -m pytest -m scale -s tests/integration/test_playtime_scale.py tests/integration/test_gateway_scale.py "$@"
