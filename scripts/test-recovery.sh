#!/usr/bin/env bash
# `make test-recovery`: the backup and restore drills (tests/recovery/) on a stack instance of their own,
# because they destroy its PostgreSQL cluster and its Redis data. That instance uses this checkout's ports
# + $RECOVERY_PORT_OFFSET (default 25), state in .local/recovery and $PG_DIR-recovery, and a short
# archive_timeout ($RECOVERY_ARCHIVE_TIMEOUT, default 10 s) so that the drill's WAL reaches the archive
# quickly. Both are removed after a passing run (kept for inspection after a failing one) and rebuilt from
# nothing by the next. CI runs it after `make test` (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${RECOVERY_DRILL:-}" != 1 ]; then
    # Derive the drill's settings from this checkout's stack (in a subshell, so that none of its exported
    # values leak into the drill), then run the drill in a clean environment that sees only those.
    envfile="$PWD/.local/recovery.env"
    mkdir -p .local
    bash -c '
        source scripts/lib/env.sh
        offset="${RECOVERY_PORT_OFFSET:-25}"
        # the gRPC port moves out of the ephemeral range (50051 is in it: an outgoing connection may hold it)
        echo "GRPC_PORT=$((GRPC_PORT - 50051 + 23051 + offset))"
        for v in METRICS_PORT ENVOY_PORT ENVOY_ADMIN_PORT WS_PORT WS_METRICS_PORT PG_PORT \
            REDIS_PORT KAFKA_PORT S3_PORT S3_TLS_PORT S3_GRPC_PORT SEAWEED_MASTER_PORT SEAWEED_VOLUME_PORT \
            SEAWEED_FILER_PORT SEAWEED_ADMIN_PORT; do
            echo "$v=$((${!v} + offset))"
        done
        echo "LOCAL_DIR=$ROOT_DIR/.local/recovery"
        echo "PG_DIR=$PG_DIR-recovery"
        echo "PG_ARCHIVE_TIMEOUT=${RECOVERY_ARCHIVE_TIMEOUT:-10}"
    ' >"$envfile"
    exec env -i PATH="$PATH" HOME="${HOME:-/root}" LANG=C.UTF-8 TERM="${TERM:-dumb}" \
        RECOVERY_DRILL=1 STACK_ENV_FILE="$envfile" bash "$0" "$@"
fi

source scripts/lib/env.sh
reset_drill() {
    bash scripts/stack-down.sh >/dev/null 2>&1 || true
    rm -rf "$LOCAL_DIR" "$PG_DIR"
}
finish() {
    local status=$?
    if [ "$status" -eq 0 ]; then
        reset_drill
    else
        bash scripts/stack-down.sh >/dev/null 2>&1 || true
        echo "test-recovery: FAILED; the drill's logs stay in $LOCAL_DIR/logs and $PG_DIR" >&2
    fi
}
reset_drill # leftovers of an interrupted run
trap finish EXIT

printf '\n== recovery drill stack (postgres :%s, redis :%s, s3 :%s/%s)\n' "$PG_PORT" "$REDIS_PORT" "$S3_PORT" "$S3_TLS_PORT"
bash scripts/stack-up.sh
python -m alembic upgrade heads

printf '\n== recovery drills\n'
[ $# -gt 0 ] || set -- tests/recovery
python -m pytest -p no:cacheprovider "$@"
