# pgBackRest for the local cluster (sourced after scripts/lib/env.sh and scripts/lib/stack.sh): its
# configuration, the WAL archiving settings the cluster starts with, and `pgbr` to run it as postgres.
#
# Everything lives beside the cluster in $PG_DIR/pgbackrest (config, the CA it trusts, logs, locks), never in
# /etc/pgbackrest or /tmp/pgbackrest, so that several checkouts' stacks on one machine stay apart. The
# config is rewritten from the environment by stack-up and by every backup/restore, so env changes apply;
# it holds the repository's S3 secret (mode 600, owner postgres). The repository itself is the S3 bucket
# $BACKUP_S3_BUCKET (path /pgbackrest), reached over HTTPS on $S3_TLS_PORT.

PGBR_DIR="$PG_DIR/pgbackrest"
PGBR_CONF="$PGBR_DIR/pgbackrest.conf"

# pgbr ARGS... : pgBackRest on this checkout's stanza, as the postgres user.
pgbr() { pg pgbackrest --config="$PGBR_CONF" --stanza="$BACKUP_STANZA" "$@"; }

# pgbr_write_config : (re)writes $PGBR_CONF and copies the local CA next to it.
pgbr_write_config() {
    mkdir -p "$PGBR_DIR/log" "$PGBR_DIR/lock" "$PGBR_DIR/spool"
    install -m 644 "$S3_TLS_DIR/ca.pem" "$PGBR_DIR/ca.pem"
    local tmp="$PGBR_CONF.tmp"
    (
        umask 077
        cat >"$tmp" <<CONF
# Written by scripts/lib/pgbackrest.sh from the environment (scripts/lib/env.sh): edits here are lost.
[global]
repo1-type=s3
repo1-path=/pgbackrest
repo1-s3-bucket=$BACKUP_S3_BUCKET
repo1-s3-endpoint=127.0.0.1
repo1-s3-port=$S3_TLS_PORT
repo1-s3-uri-style=path
repo1-s3-region=$S3_REGION
repo1-s3-key=$BACKUP_S3_ACCESS_KEY_ID
repo1-s3-key-secret=$BACKUP_S3_SECRET_ACCESS_KEY
repo1-storage-ca-file=$PGBR_DIR/ca.pem
repo1-retention-full-type=time
repo1-retention-full=$BACKUP_RETENTION_FULL_DAYS
repo1-retention-archive-type=full
repo1-retention-archive=$BACKUP_RETENTION_WAL_FULLS
compress-type=zst
start-fast=y
archive-timeout=60
archive-push-queue-max=1GiB
log-path=$PGBR_DIR/log
lock-path=$PGBR_DIR/lock
spool-path=$PGBR_DIR/spool
log-level-console=warn
log-level-file=info

[$BACKUP_STANZA]
pg1-path=$PG_DATA
pg1-port=$PG_PORT
pg1-socket-path=$PG_DIR
pg1-user=postgres
CONF
    )
    mv -f "$tmp" "$PGBR_CONF"
    chown -R postgres: "$PGBR_DIR"
}

# pg_archive_opts : the postgres options for continuous WAL archiving into the repository. archive_timeout
# forces a segment switch after that many seconds with writes, so at low traffic the newest committed
# transaction reaches the archive within $PG_ARCHIVE_TIMEOUT seconds (plus one archive-push).
pg_archive_opts() {
    printf '%s' "-c archive_mode=on -c archive_timeout=$PG_ARCHIVE_TIMEOUT"
    printf '%s' " -c \"archive_command=pgbackrest --config=$PGBR_CONF --stanza=$BACKUP_STANZA archive-push %p\""
}
