#!/usr/bin/env bash
# pg_local.sh: start the Debian PostgreSQL cluster on this machine (if it is
# not running) and make a role and database for faceverifyd's tests.
# Prints the connection URL (for FACEVERIFY_PG_URL) on stdout.  Needs root
# (or the postgres user); idempotent: safe when everything already exists.
set -euo pipefail
ROLE=${FV_PG_ROLE:-faceverify}
DB=${FV_PG_DB:-faceverify_test}
PASS=${FV_PG_PASSWORD:-faceverify}
ver=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)
if [ -z "$ver" ]; then
    echo "pg_local: PostgreSQL is not installed (apt-get install postgresql)" >&2
    exit 1
fi
if ! pg_lsclusters -h | grep -q "^$ver main"; then
    pg_createcluster "$ver" main >&2
fi
if ! pg_lsclusters -h | grep -q "^$ver main .* online"; then
    # Notices such as "Removed stale pid file." go to stderr: only the URL may
    # reach stdout, which callers capture as FACEVERIFY_PG_URL.
    # A killed server (a session that ended) can leave a socket lock whose
    # PID is gone or still exiting: remove locks of dead PIDs and retry.
    for try in 1 2 3 4 5 6; do
        pg_ctlcluster "$ver" main start >&2 && break
        [ "$try" = 6 ] && exit 1
        sleep 1
        for lock in /var/run/postgresql/.s.PGSQL.*.lock; do
            [ -e "$lock" ] || continue
            pid=$(head -1 "$lock")
            if ! kill -0 "$pid" 2>/dev/null; then
                echo "pg_local: removing stale $lock (pid $pid)" >&2
                rm -f "$lock"
            fi
        done
    done
fi
port=$(pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main" {print $3}')
as_pg() { if [ "$(id -un)" = postgres ]; then "$@"; else su postgres -c "$(printf '%q ' "$@")"; fi; }
for _ in $(seq 1 30); do as_pg psql -p "$port" -qAtc 'select 1' >/dev/null 2>&1 && break; sleep 0.5; done
if [ "$(as_pg psql -p "$port" -qAtc "select 1 from pg_roles where rolname='$ROLE'")" != 1 ]; then
    as_pg psql -p "$port" -qc "create role $ROLE login password '$PASS'" >/dev/null
fi
if [ "$(as_pg psql -p "$port" -qAtc "select 1 from pg_database where datname='$DB'")" != 1 ]; then
    as_pg psql -p "$port" -qc "create database $DB owner $ROLE" >/dev/null
fi
echo "postgres://$ROLE:$PASS@127.0.0.1:$port/$DB"
