#!/usr/bin/env bash
# Stops the local stack started by scripts/stack-up.sh (and anything else that recorded a pid file in
# $LOCAL_DIR/run, e.g. the service and the gateway started by scripts/run.sh). Idempotent; data is kept
# (.local/ and $PG_DIR); `rm -rf .local "$PG_DIR"` after this resets everything.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/env.sh"
source "$ROOT_DIR/scripts/lib/stack.sh"

# Signal everything first (fronts before backends: Envoy, the service and the gateway before the stores),
# then wait for all of them: shutdowns overlap, so stack-down takes as long as the slowest one. The S3 store
# goes last, after PostgreSQL: a stopping cluster still archives its finished WAL segments into it.
declare -a names=() pids=()
ordered=(envoy)
cluster=()
for file in "$RUN_DIR"/*.pid; do
    [ -e "$file" ] || continue
    name="$(basename "$file" .pid)"
    case "$name" in envoy | redis | kafka | s3) ;; redis-cluster-*) cluster+=("$name") ;; *) ordered+=("$name") ;; esac
done
ordered+=(kafka redis "${cluster[@]}")
signal() {
    local name pid
    for name in "$@"; do
        if pid="$(stack_signal "$name")"; then
            names+=("$name")
            pids+=("$pid")
        fi
    done
}
signal "${ordered[@]}"

pg_stopped=0
if [ -n "$PG_BIN" ] && pg_running; then
    # (an archive_command that hangs, e.g. on an unreachable repository, holds a fast shutdown: then
    # immediate, which replays the WAL on the next start and archives it then)
    pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 30 stop >/dev/null || {
        stack_err "pg_ctl stop -m fast did not finish in 30s (see $PG_LOG): stopping immediately"
        pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w -t 30 stop >/dev/null || stack_err "pg_ctl stop failed"
    }
    pg_stopped=1
fi
signal s3

for i in "${!names[@]}"; do
    stack_reap "${names[$i]}" "${pids[$i]}" 20
done

stopped=("${names[@]}")
[ "$pg_stopped" -eq 1 ] && stopped+=(postgres)
if [ "${#stopped[@]}" -eq 0 ]; then
    echo "local stack: nothing running"
else
    echo "local stack: stopped ${stopped[*]}"
fi
