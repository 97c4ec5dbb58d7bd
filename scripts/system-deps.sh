#!/usr/bin/env bash
# Installs the Debian packages the local stack and the benchmark need (PostgreSQL, pgBackRest, Redis,
# h2load, wrk, curl, runuser). Idempotent and fast when everything is present; runs `apt-get update` at most once.
# CI runs as root with no standard input.
set -euo pipefail

missing=()
have_initdb() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }
have_initdb || missing+=(postgresql)
# backups and WAL archiving of the cluster (scripts/backup, scripts/restore, docs/OPERATIONS.md)
command -v pgbackrest >/dev/null 2>&1 || missing+=(pgbackrest)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)
command -v runuser >/dev/null 2>&1 || missing+=(util-linux)

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

# de-duplicate while keeping order
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++')

if [ "$(id -u)" -ne 0 ]; then
    echo "system-deps: missing packages: ${missing[*]}" >&2
    echo "system-deps: not root; install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi

echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Do not let package installation start the distribution's own services (default cluster, redis on 6379).
policy_rc=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy_rc" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy_rc"
    chmod +x "$policy_rc"
    created_policy=1
fi
cleanup() { if [ "$created_policy" -eq 1 ]; then rm -f "$policy_rc"; fi; }
trap cleanup EXIT

apt-get update -qq </dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
echo "system-deps: done"
