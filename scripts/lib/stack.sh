# Helpers for the local stack's background processes (sourced after scripts/lib/env.sh).
#
# Every process started here gets a pid file $RUN_DIR/<name>.pid holding "<pid> <start time>" (the start
# time from /proc/<pid>/stat guards against pid reuse: a stale pid file never makes us signal a process we
# did not start) and a log $LOG_DIR/<name>.log (the previous one is kept as <name>.log.1).
# scripts/run.sh may use stack_start_bg / stack_stop for the service and the gateway too.

RUN_DIR="$LOCAL_DIR/run"
LOG_DIR="$LOCAL_DIR/logs"

# PostgreSQL (started by stack-up.sh, stopped by stack-down.sh): the newest installed server (empty when
# none is), its cluster in $PG_DIR.
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
PG_DATA="$PG_DIR/data"
PG_LOG="$PG_DIR/postgres.log"

# pg CMD... : runs CMD as the postgres user (from / so that a checkout the postgres user cannot enter does
# not produce warnings).
pg() { (cd / && runuser -u postgres -- "$@"); }

# pg_running -> succeeds when the cluster's postmaster is alive.
pg_running() {
    [ -f "$PG_DATA/postmaster.pid" ] || return 1
    local pid
    pid="$(head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null)" || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# pg_start_cluster : starts the cluster in $PG_DATA (pg_ctl -w) with the stack's settings, WAL archiving
# included (scripts/lib/pgbackrest.sh must be sourced). Settings are on the command line so that env
# overrides (PG_PORT, PG_MAX_CONNECTIONS, PG_ARCHIVE_TIMEOUT) apply without editing the cluster.
# Durability settings stay at their defaults (fsync, full_page_writes, synchronous_commit).
pg_start_cluster() {
    local opts="-c port=$PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$PG_DIR"
    opts+=" -c max_connections=$PG_MAX_CONNECTIONS -c shared_buffers=256MB"
    opts+=" -c log_min_messages=warning -c log_connections=off"
    opts+=" $(pg_archive_opts)"
    pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -o "$opts" -w -t "$STACK_TIMEOUT" start >/dev/null
}

pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres; }

stack_err() { printf 'ERROR: %s\n' "$*" >&2; }

# _proc_start_time PID -> prints the process start time (clock ticks since boot) or nothing.
_proc_start_time() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    # the command name (field 2) may contain spaces: cut after the last ')'
    stat="${stat##*) }"
    # the remaining fields start at field 3 (state), so starttime (field 22) is positional parameter 20
    set -- $stat
    printf '%s' "${20}"
}

# stack_pid NAME -> prints the pid if the pid file names a live process we started, else fails.
stack_pid() {
    local file="$RUN_DIR/$1.pid" pid start now
    [ -f "$file" ] || return 1
    read -r pid start <"$file" || true
    [ -n "${pid:-}" ] && [ -d "/proc/$pid" ] || return 1
    if [ -n "${start:-}" ]; then
        now="$(_proc_start_time "$pid")" || return 1
        [ "$now" = "$start" ] || return 1
    fi
    # a zombie is not running
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != "Z" ] || return 1
    printf '%s' "$pid"
}

stack_write_pid() { # NAME PID
    mkdir -p "$RUN_DIR"
    printf '%s %s\n' "$2" "$(_proc_start_time "$2")" >"$RUN_DIR/$1.pid"
}

# port_open PORT [HOST] -> succeeds when something accepts TCP connections there.
port_open() {
    (exec 3<>"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null
}

# stack_start_bg NAME CMD... : starts CMD detached (own session, stdin from /dev/null), logging to
# $LOG_DIR/NAME.log, and records its pid.
stack_start_bg() {
    local name="$1"
    shift
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    local log="$LOG_DIR/$name.log"
    [ -f "$log" ] && mv -f "$log" "$log.1"
    setsid "$@" >"$log" 2>&1 </dev/null &
    local pid=$!
    stack_write_pid "$name" "$pid"
}

# stack_log_tail NAME|FILE : prints the last lines of a component's log to stderr.
stack_log_tail() {
    local log="$1"
    [ -f "$log" ] || log="$LOG_DIR/$1.log"
    if [ -f "$log" ]; then
        printf -- '---- last lines of %s ----\n' "$log" >&2
        tail -n 30 "$log" >&2
        printf -- '----\n' >&2
    else
        printf '(no log at %s)\n' "$log" >&2
    fi
}

# stack_wait NAME LOG CHECK... : runs CHECK until it succeeds; fails (with the log's tail) when the
# component's process died or $STACK_TIMEOUT seconds passed.
stack_wait() {
    local name="$1" log="$2"
    shift 2
    local deadline=$((SECONDS + STACK_TIMEOUT))
    while ! "$@" >/dev/null 2>&1; do
        if ! stack_pid "$name" >/dev/null; then
            stack_err "$name exited during startup"
            stack_log_tail "$log"
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            stack_err "$name did not become ready within ${STACK_TIMEOUT}s (check: $*)"
            stack_log_tail "$log"
            return 1
        fi
        sleep 0.1
    done
}

# stack_signal NAME : sends SIGTERM to a running component (no-op when not running); prints the pid.
stack_signal() {
    local pid
    pid="$(stack_pid "$1")" || {
        rm -f "$RUN_DIR/$1.pid"
        return 1
    }
    kill -TERM "$pid" 2>/dev/null || true
    printf '%s' "$pid"
}

# stack_reap NAME PID [TIMEOUT] : waits for PID to exit after stack_signal, SIGKILLs it after TIMEOUT
# seconds, removes the pid file.
stack_reap() {
    local name="$1" pid="$2" timeout="${3:-20}"
    local deadline=$((SECONDS + timeout))
    while stack_pid "$name" >/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            stack_err "$name (pid $pid) ignored SIGTERM for ${timeout}s: sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
            break
        fi
        sleep 0.1
    done
    rm -f "$RUN_DIR/$name.pid"
}

# stack_stop NAME [TIMEOUT] : SIGTERM, wait, SIGKILL after TIMEOUT seconds.
stack_stop() {
    local pid
    pid="$(stack_signal "$1")" || return 0
    stack_reap "$1" "$pid" "${2:-20}"
}
