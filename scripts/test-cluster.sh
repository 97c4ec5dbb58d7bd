#!/usr/bin/env bash
# `make test-cluster`: the Redis-dependent tests against a Redis Cluster (REDIS_CLUSTER=1: three masters on
# REDIS_CLUSTER_PORT, +1, +2 beside the stack's single Redis, which nothing uses then), stopped after. The
# server, the relay (`python -m gateway`) and the tests' own clients run with REDIS_MODE=cluster; tests
# that need a Redis of their own get a private three-master cluster (tests/support/processes.py).
# Covered: heartbeats and the accrual rule, playtime schedules, checkpoints and the reaper, rate limits,
# download progress reports, manifests and their link cache, notifications to WebSockets, and the test that
# every script's keys share a slot. Extra pytest arguments are passed on.
set -euo pipefail
unset REDIS_URL REDIS_MODE
export REDIS_CLUSTER=1
source "$(dirname "${BASH_SOURCE[0]}")/lib/env.sh"
cd "$ROOT_DIR"
trap 'bash scripts/stack-down.sh >/dev/null 2>&1 || true' EXIT
bash scripts/stack-up.sh
python -m alembic upgrade heads
source scripts/lib/stack.sh
stack_stop gateway
stack_start_bg gateway python -m gateway
stack_wait gateway "$LOG_DIR/gateway.log" port_open "$WS_PORT"
python -m pytest -p no:cacheprovider \
    tests/unit/test_redis_slots.py \
    tests/integration/test_redis_cluster.py \
    tests/integration/test_playtime.py \
    tests/integration/test_heartbeat_accrual.py \
    tests/integration/test_rate_limits.py \
    tests/integration/test_download_sessions.py \
    tests/integration/test_gateway.py \
    tests/e2e/test_download_content.py \
    tests/e2e/test_settings_notifications.py \
    "$@"
