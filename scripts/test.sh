#!/usr/bin/env bash
# `make test`: start the local stack, run every check and every test against it, stop the stack.
# Non-zero on any failure. CI runs exactly this (.ci/run → make test).
set -euo pipefail
source "$(dirname "$0")/lib/env.sh"
cd "$ROOT_DIR"

trap 'bash scripts/stack-down.sh >/dev/null 2>&1 || true' EXIT

step() { printf '\n== %s\n' "$*"; }

step "static checks"
ruff check .
ruff format --check .
buf lint
buf breaking --against proto/baseline/v1.binpb
bash scripts/gen.sh --check
bash scripts/envoy-validate.sh

step "local stack"
bash scripts/stack-up.sh
python -m alembic upgrade heads
# The WebSocket relay, as `make run` starts it (stack-down stops it); pytest starts the gRPC server itself.
source scripts/lib/stack.sh
stack_stop gateway
stack_start_bg gateway python -m gateway
stack_wait gateway "$LOG_DIR/gateway.log" port_open "$WS_PORT"

step "tests"
python -m pytest "$@"
