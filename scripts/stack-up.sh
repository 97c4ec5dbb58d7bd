#!/usr/bin/env bash
# Starts the local stack as plain background processes (no Docker): PostgreSQL, Redis, Kafka (Tansu),
# S3 (SeaweedFS) and the Envoy edge. State, logs and pid files live under $LOCAL_DIR (.local/), except the
# PostgreSQL cluster, which lives in $PG_DIR (under /tmp: postgres refuses root and must reach its data).
#
# Idempotent: a component that already runs is left alone (Envoy is restarted only when its rendered config
# changed, e.g. a new descriptor set or GRPC_UPSTREAMS). Waits until every component answers, with a
# timeout ($STACK_TIMEOUT, default 60s) and the tail of the failing component's log.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/env.sh"
source "$ROOT_DIR/scripts/lib/stack.sh"
source "$ROOT_DIR/scripts/lib/pgbackrest.sh"

PY="$ROOT_DIR/.venv/bin/python"
[ -x "$PY" ] || { stack_err "no virtualenv at $ROOT_DIR/.venv: run \`make venv\`"; exit 1; }
WEED="$ROOT_DIR/.venv/bin/weed"
ENVOY="$ROOT_DIR/.venv/bin/envoy"
for bin in "$WEED" "$ENVOY" "$TANSU_BIN"; do
    [ -x "$bin" ] || { stack_err "$bin is missing: run \`make venv\`"; exit 1; }
done
[ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] || { stack_err "PostgreSQL not installed: run \`make system-deps\`"; exit 1; }
command -v redis-server >/dev/null || { stack_err "redis-server not installed: run \`make system-deps\`"; exit 1; }
command -v pgbackrest >/dev/null || { stack_err "pgbackrest not installed: run \`make system-deps\`"; exit 1; }

mkdir -p "$LOCAL_DIR" "$RUN_DIR" "$LOG_DIR"
START=$SECONDS
declare -a STARTED=()

# ensure_port_free NAME PORT... : a port that answers although our process is not running belongs to
# someone else; fail instead of silently talking to a foreign server.
ensure_port_free() {
    local name="$1" port
    shift
    for port in "$@"; do
        if port_open "$port"; then
            stack_err "$name: port $port is already in use by a process this stack did not start"
            stack_err "(another checkout's stack? stop it, or override the port in the environment)"
            exit 1
        fi
    done
}

# ---------------------------------------------------------------- dev JWT keys (once)
if [ ! -f "$JWT_PRIVATE_KEY_FILE" ] || [ ! -f "$JWT_JWKS_FILE" ]; then
    "$PY" "$ROOT_DIR/scripts/lib/stack_tools.py" keys
fi
# ---------------------------------------------------------------- local CA + S3 certificate (once)
"$PY" "$ROOT_DIR/scripts/lib/stack_tools.py" tls

# ---------------------------------------------------------------- Redis
# appendonly + fsync every second: a restart or crash keeps the data (active play sessions, download
# progress, notification streams) up to the last second. RDB snapshots on top ($REDIS_SAVE: after 1 h
# with a change, 5 min with 100, 1 min with 10000): the file to copy away as Redis's backup.
# Keyspace events for stream commands (Kt): the WebSocket relay's one subscriber per process learns
# from them which users' notification streams grew (gateway/hub.py).
# redis_start NAME PORT DIR [FLAG...] : one Redis of the stack (the single one, or a cluster node).
redis_start() {
    local name="$1" port="$2" dir="$3"
    shift 3
    mkdir -p "$dir"
    stack_start_bg "$name" redis-server \
        --bind 127.0.0.1 --port "$port" --protected-mode yes --notify-keyspace-events Kt \
        --dir "$dir" --appendonly yes --appendfsync everysec --save "$REDIS_SAVE" \
        --daemonize no --logfile "" --databases 16 "$@"
    STARTED+=("$name")
}

start_redis() {
    if stack_pid redis >/dev/null; then return; fi
    ensure_port_free redis "$REDIS_PORT"
    redis_start redis "$REDIS_PORT" "$LOCAL_DIR/redis"
}

# REDIS_CLUSTER=1: three cluster-enabled masters on REDIS_CLUSTER_PORT, +1, +2 (cluster bus: port + 10000),
# each with the flags above, its nodes.conf and data under $LOCAL_DIR/redis-cluster/PORT.
REDIS_CLUSTER_PORTS=("$REDIS_CLUSTER_PORT" "$((REDIS_CLUSTER_PORT + 1))" "$((REDIS_CLUSTER_PORT + 2))")
start_redis_cluster() {
    local port
    for port in "${REDIS_CLUSTER_PORTS[@]}"; do
        if stack_pid "redis-cluster-$port" >/dev/null; then continue; fi
        ensure_port_free "redis-cluster-$port" "$port" "$((port + 10000))"
        redis_start "redis-cluster-$port" "$port" "$LOCAL_DIR/redis-cluster/$port" \
            --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000
    done
}

# ---------------------------------------------------------------- Kafka (Tansu, in-memory storage)
start_kafka() {
    if stack_pid kafka >/dev/null; then return; fi
    ensure_port_free kafka "$KAFKA_PORT"
    stack_start_bg kafka "$TANSU_BIN" broker \
        --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --storage-engine memory://tansu/
    STARTED+=(kafka)
}

# ---------------------------------------------------------------- S3 (SeaweedFS `weed mini`)
start_s3() {
    if stack_pid s3 >/dev/null; then return; fi
    ensure_port_free s3 "$S3_PORT" "$S3_TLS_PORT" "$SEAWEED_MASTER_PORT" "$SEAWEED_VOLUME_PORT" "$SEAWEED_FILER_PORT"
    local dir="$LOCAL_DIR/seaweedfs"
    mkdir -p "$dir/data"
    # weed mini saves its flags (and ports it picked itself when one was busy) to mini.options and reloads
    # them on the next start: drop it so that the flags below, i.e. the environment, always win.
    rm -f "$dir/data/mini.options"
    # The S3 identities: the service's (Admin on every bucket) and pgBackRest's (its own bucket only);
    # rewritten each start so env changes apply.
    "$PY" - "$dir/s3.json" <<'PYEOF'
import json, os, sys
backups = os.environ["BACKUP_S3_BUCKET"]
config = {"identities": [{
    "name": "library",
    "credentials": [{"accessKey": os.environ["S3_ACCESS_KEY_ID"], "secretKey": os.environ["S3_SECRET_ACCESS_KEY"]}],
    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
}, {
    "name": "backup",
    "credentials": [{"accessKey": os.environ["BACKUP_S3_ACCESS_KEY_ID"], "secretKey": os.environ["BACKUP_S3_SECRET_ACCESS_KEY"]}],
    "actions": [f"{action}:{backups}" for action in ("Read", "Write", "List", "Tagging")],
}]}
with open(sys.argv[1], "w") as f:
    json.dump(config, f, indent=2)
PYEOF
    chmod 600 "$dir/s3.json"
    # Every port weed opens is pinned (see env.sh). HTTPS on $S3_TLS_PORT beside HTTP on $S3_PORT, with the
    # certificate of the local CA (stack_tools.py tls).
    stack_start_bg s3 "$WEED" mini \
        -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -master.telemetry=false -webdav=false -admin.ui=false \
        -s3.config="$dir/s3.json" \
        -s3.port="$S3_PORT" -s3.port.grpc="$S3_GRPC_PORT" -s3.port.iceberg=0 -s3.port.lance=0 \
        -s3.port.https="$S3_TLS_PORT" -s3.cert.file="$S3_TLS_DIR/cert.pem" -s3.key.file="$S3_TLS_DIR/key.pem" \
        -master.port="$SEAWEED_MASTER_PORT" -master.port.grpc="$SEAWEED_MASTER_GRPC_PORT" \
        -volume.port="$SEAWEED_VOLUME_PORT" -volume.port.grpc="$SEAWEED_VOLUME_GRPC_PORT" \
        -filer.port="$SEAWEED_FILER_PORT" -filer.port.grpc="$SEAWEED_FILER_GRPC_PORT" \
        -admin.port="$SEAWEED_ADMIN_PORT" -admin.port.grpc="$SEAWEED_ADMIN_GRPC_PORT" \
        -volume.preStopSeconds=0
    STARTED+=(s3)
}

# ---------------------------------------------------------------- Envoy
ENVOY_DIR="$(dirname "$ENVOY_CONFIG")"
start_envoy() {
    local rendered="$ENVOY_CONFIG.new"
    mkdir -p "$ENVOY_DIR"
    "$PY" "$ROOT_DIR/scripts/render-envoy.py" -o "$rendered" || {
        stack_err "rendering the Envoy config failed"
        exit 1
    }
    if stack_pid envoy >/dev/null; then
        if cmp -s "$rendered" "$ENVOY_CONFIG"; then
            rm -f "$rendered"
            return
        fi
        echo "envoy: rendered config changed (template, descriptor, JWKS, OpenAPI file or upstreams): restarting"
        stack_stop envoy 10
    fi
    mv -f "$rendered" "$ENVOY_CONFIG"
    ensure_port_free envoy "$ENVOY_PORT" "$ENVOY_ADMIN_PORT"
    stack_start_bg envoy "$ENVOY" -c "$ENVOY_CONFIG" --disable-hot-restart \
        --concurrency "$ENVOY_CONCURRENCY" --log-level "$ENVOY_LOG_LEVEL"
    STARTED+=(envoy)
}

# ---------------------------------------------------------------- PostgreSQL
# (PG_BIN, PG_DATA, PG_LOG, pg and pg_running come from scripts/lib/stack.sh)

# The cluster lives under /tmp, keyed by the checkout's path, while the object store, keys and backups live
# in the checkout's .local: a new checkout at a path used before (a fresh clone, a recreated worktree) would
# find an old cluster whose rows name objects its new store does not have (chunks "already uploaded", saves
# that 404). Both sides record one stack id; a cluster with another id is dropped and made anew. A checkout
# from before the ids (store data present, no id yet) adopts its cluster.
claim_postgres_cluster() {
    local id_file="$LOCAL_DIR/stack-id" owner_file="$PG_DIR/stack-id"
    mkdir -p "$PG_DIR"
    if [ ! -f "$id_file" ]; then
        mkdir -p "$LOCAL_DIR"
        "$PY" -c 'import uuid; print(uuid.uuid4())' >"$id_file"
        if [ -d "$LOCAL_DIR/seaweedfs/data" ] && [ -f "$PG_DATA/PG_VERSION" ] && [ ! -f "$owner_file" ]; then
            cp "$id_file" "$owner_file"
        fi
    fi
    if [ -f "$PG_DATA/PG_VERSION" ] && ! cmp -s "$id_file" "$owner_file"; then
        echo "postgres: $PG_DIR belongs to an earlier checkout at this path: making a new cluster"
        if pg_running; then
            pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w -t 30 stop >/dev/null || true
        fi
        rm -rf "$PG_DATA" "$PG_DIR/pgbackrest"
    fi
    cp "$id_file" "$owner_file"
}

start_postgres() {
    mkdir -p "$PG_DIR"
    chown postgres: "$PG_DIR"
    chmod 700 "$PG_DIR"
    if [ ! -f "$PG_DATA/PG_VERSION" ]; then
        rm -rf "$PG_DATA" # leftovers of an interrupted initdb
        echo "postgres: initdb $PG_DATA"
        pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
            >"$PG_DIR/initdb.log" 2>&1 || {
            stack_err "initdb failed"
            stack_log_tail "$PG_DIR/initdb.log"
            exit 1
        }
    fi
    ln -sfn "$PG_LOG" "$LOG_DIR/postgres.log"
    pgbr_write_config
    if pg_running; then return; fi
    ensure_port_free postgres "$PG_PORT"
    pg_start_cluster || {
        stack_err "pg_ctl start failed"
        stack_log_tail "$PG_LOG"
        exit 1
    }
    STARTED+=(postgres)
}

setup_postgres() {
    local psql=("$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA)
    if [ "$("${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = 'library'")" != 1 ]; then
        "${psql[@]}" -c "CREATE ROLE library LOGIN CREATEDB"
        echo "postgres: created role library"
    fi
    if [ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = 'library'")" != 1 ]; then
        "${psql[@]}" -c "CREATE DATABASE library OWNER library"
        echo "postgres: created database library"
    fi
}

# ---------------------------------------------------------------- start everything, then wait
claim_postgres_cluster # before start_s3 makes the store's directory
start_redis
[ "$REDIS_CLUSTER" = 1 ] && start_redis_cluster
start_kafka
start_s3
start_envoy
start_postgres

redis_ready() { [ "$(redis-cli -h 127.0.0.1 -p "${1:-$REDIS_PORT}" ping 2>/dev/null)" = PONG ]; }
cluster_info() { redis-cli -h 127.0.0.1 -p "$1" cluster info 2>/dev/null | tr -d '\r'; }
cluster_ok() {
    local port
    for port in "${REDIS_CLUSTER_PORTS[@]}"; do
        cluster_info "$port" | grep -qx 'cluster_state:ok' || return 1
        cluster_info "$port" | grep -qx "cluster_known_nodes:${#REDIS_CLUSTER_PORTS[@]}" || return 1
    done
}

# Forms the cluster once (all 16384 slots over the three masters, no replicas); a formed one is left alone.
# Nodes that know each other only partly (a node's data was deleted) are not repaired: that needs a reset.
form_redis_cluster() {
    local port nodes=() out
    for port in "${REDIS_CLUSTER_PORTS[@]}"; do
        stack_wait "redis-cluster-$port" "$LOG_DIR/redis-cluster-$port.log" redis_ready "$port" || exit 1
        nodes+=("127.0.0.1:$port")
    done
    cluster_ok && return
    if cluster_info "${REDIS_CLUSTER_PORTS[0]}" | grep -qx 'cluster_known_nodes:1' &&
        [ "$(redis-cli -p "${REDIS_CLUSTER_PORTS[0]}" dbsize)" = 0 ]; then
        out="$(redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes 2>&1)" || {
            printf '%s\n' "$out" >&2
            stack_err "redis cluster: create failed"
            exit 1
        }
        echo "redis cluster: created (${nodes[*]})"
    fi
    local deadline=$((SECONDS + STACK_TIMEOUT))
    until cluster_ok; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            stack_err "redis cluster on ${nodes[*]} is not ok within ${STACK_TIMEOUT}s:"
            cluster_info "${REDIS_CLUSTER_PORTS[0]}" | head -n 3 >&2
            stack_err "stop the stack and delete $LOCAL_DIR/redis-cluster to form it again (its data is lost)"
            exit 1
        fi
        sleep 0.2
    done
}
envoy_ready() { [ "$(curl -s --max-time 1 "http://127.0.0.1:$ENVOY_ADMIN_PORT/ready")" = LIVE ]; }

wait_postgres() {
    local deadline=$((SECONDS + STACK_TIMEOUT))
    until pg_ready; do
        if ! pg_running && [ "$SECONDS" -gt $((START + 3)) ]; then
            stack_err "postgres is not running"
            stack_log_tail "$PG_LOG"
            exit 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            stack_err "postgres did not become ready within ${STACK_TIMEOUT}s"
            stack_log_tail "$PG_LOG"
            exit 1
        fi
        sleep 0.1
    done
}

wait_postgres
setup_postgres
stack_wait redis "$LOG_DIR/redis.log" redis_ready || exit 1
[ "$REDIS_CLUSTER" = 1 ] && form_redis_cluster
stack_wait kafka "$LOG_DIR/kafka.log" port_open "$KAFKA_PORT" || exit 1
stack_wait s3 "$LOG_DIR/s3.log" port_open "$S3_PORT" || exit 1
stack_wait envoy "$LOG_DIR/envoy.log" envoy_ready || exit 1

# Kafka metadata request + topics, S3 ListBuckets + bucket (one Python process for both).
if ! setup_out="$("$PY" "$ROOT_DIR/scripts/lib/stack_tools.py" setup --timeout "$STACK_TIMEOUT" 2>&1)"; then
    printf '%s\n' "$setup_out" >&2
    case "$setup_out" in *"ERROR kafka"*) stack_log_tail "$LOG_DIR/kafka.log" ;; esac
    case "$setup_out" in *"ERROR s3"*) stack_log_tail "$LOG_DIR/s3.log" ;; esac
    exit 1
fi
[ -n "$setup_out" ] && printf '%s\n' "$setup_out"

# ---------------------------------------------------------------- pgBackRest stanza (WAL archiving)
# Idempotent. It fails when the repository holds another cluster's backups (the data directory was deleted
# and initdb made a new cluster): then this cluster's WAL is not archived, and nothing is deleted for you.
if ! stanza_out="$(pgbr stanza-create 2>&1)"; then
    printf '%s\n' "$stanza_out" >&2
    stack_err "pgbackrest: stanza-create failed, WAL archiving of this cluster does not work (see above)."
    stack_err "If the S3 store was started before it served HTTPS on $S3_TLS_PORT: \`make stack-down && make stack-up\`."
    stack_err "If the repository holds backups of an earlier cluster: \`scripts/restore --to latest --yes\` brings it back;"
    stack_err "\`scripts/backup --drop-repository --yes\` deletes those backups and starts archiving this cluster."
fi

if [ "${#STARTED[@]}" -eq 0 ]; then
    summary="already running"
else
    summary="started ${STARTED[*]}"
fi
cluster_line=""
if [ "$REDIS_CLUSTER" = 1 ]; then
    cluster_line="  redis cluster  127.0.0.1 ports ${REDIS_CLUSTER_PORTS[*]} (3 masters; REDIS_MODE=$REDIS_MODE, REDIS_URL=$REDIS_URL)
"
fi
cat <<EOF
local stack up ($summary, $((SECONDS - START))s):
  postgres  127.0.0.1:$PG_PORT   db library, role library (trust)   data $PG_DATA
  redis     127.0.0.1:$REDIS_PORT   aof in $LOCAL_DIR/redis
${cluster_line}  kafka     127.0.0.1:$KAFKA_PORT   tansu (in-memory), topics: ${KAFKA_TOPICS//,/ }
  s3        $S3_ENDPOINT_URL   bucket $S3_BUCKET, key $S3_ACCESS_KEY_ID (seaweedfs, data $LOCAL_DIR/seaweedfs)
            https://127.0.0.1:$S3_TLS_PORT (CA $S3_TLS_DIR/ca.pem)
  backups   pgbackrest stanza $BACKUP_STANZA in s3://$BACKUP_S3_BUCKET, WAL archived (archive_timeout ${PG_ARCHIVE_TIMEOUT}s); scripts/backup, scripts/restore
  envoy     http://127.0.0.1:$ENVOY_PORT (REST + gRPC + WS)   admin :$ENVOY_ADMIN_PORT   -> grpc $GRPC_UPSTREAMS, ws 127.0.0.1:$WS_PORT
  jwt       $JWT_JWKS_FILE (kid $JWT_KID)   token: scripts/mint-token --user <uuid>
  logs      $LOG_DIR
EOF
