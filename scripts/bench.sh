#!/usr/bin/env bash
# `make bench` (after stack-up and migrate): SPEC §10 measured in one run on this machine. The service
# (1 and 2 processes), a private Envoy and a bare grpc.aio echo baseline are started on their own ports
# (BENCH_* variables, see scripts/bench/__main__.py) and stopped again; the stack's own service and Envoy,
# if any, are left alone. Results: bench-results/latest.json. Exits non-zero only if something failed to
# run; missed goals are printed as MISS.
set -euo pipefail
source "$(dirname "$0")/lib/env.sh"
cd "$ROOT_DIR"

missing=()
for tool in h2load wrk python; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ -x "$ROOT_DIR/.venv/bin/envoy" ] || command -v envoy >/dev/null 2>&1 || missing+=(envoy)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "bench: missing ${missing[*]} (run \`make system-deps venv\`)" >&2
    exit 1
fi

# The schema must be current (idempotent).
python -m alembic upgrade heads >/dev/null

# Python owns the child processes (each also dies with it: PR_SET_PDEATHSIG); forward Ctrl-C / TERM to it.
python -m scripts.bench "$@" &
bench_pid=$!
trap 'kill -TERM "$bench_pid" 2>/dev/null || true' INT TERM HUP
rc=0
wait "$bench_pid" || rc=$?
# `wait` returns early when a trapped signal arrives: wait again for the cleanup to finish.
if kill -0 "$bench_pid" 2>/dev/null; then
    wait "$bench_pid" || rc=$?
fi
exit "$rc"
