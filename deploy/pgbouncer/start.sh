#!/bin/sh
# PgBouncer for regsweep workers, configured from the environment, in transaction pooling mode.
#
# One script for every place PgBouncer runs: the compose service, the Kubernetes Deployment and
# the tests (tests/reliability/pgbouncer.py runs this very file in front of the local Postgres),
# so the configuration the tests prove is the one that ships.
#
# Writes pgbouncer.ini and the auth file into $PGBOUNCER_RUN_DIR (a tmpfs/emptyDir: the root
# file system may be read-only, and the password never lands in an image layer), then execs
# pgbouncer. Environment:
#   PGBOUNCER_DB_HOST, PGBOUNCER_DB_PORT (5432)  the Postgres server
#   PGBOUNCER_USER, PGBOUNCER_PASSWORD           the one role the workers use (from a Secret)
#   PGBOUNCER_AUTH_TYPE (scram-sha-256)          how clients authenticate; "trust" only for tests
#   PGBOUNCER_POOL_SIZE (20)                     server connections per database, all clients together
#   PGBOUNCER_MAX_CLIENT_CONN (1000)             client connections (2 per worker)
#   PGBOUNCER_LISTEN_ADDR (0.0.0.0), PGBOUNCER_LISTEN_PORT (6432), PGBOUNCER_RUN_DIR (/tmp/pgbouncer)
set -eu

fail() { echo "error: $*" >&2; exit 2; }

DB_HOST=${PGBOUNCER_DB_HOST:-}
DB_PORT=${PGBOUNCER_DB_PORT:-5432}
DB_USER=${PGBOUNCER_USER:-}
PASSWORD=${PGBOUNCER_PASSWORD:-}
AUTH_TYPE=${PGBOUNCER_AUTH_TYPE:-scram-sha-256}
POOL_SIZE=${PGBOUNCER_POOL_SIZE:-20}
MAX_CLIENT_CONN=${PGBOUNCER_MAX_CLIENT_CONN:-1000}
LISTEN_ADDR=${PGBOUNCER_LISTEN_ADDR:-0.0.0.0}
LISTEN_PORT=${PGBOUNCER_LISTEN_PORT:-6432}
RUN_DIR=${PGBOUNCER_RUN_DIR:-/tmp/pgbouncer}

[ -n "$DB_HOST" ] || fail "PGBOUNCER_DB_HOST is empty (the Postgres host PgBouncer forwards to)"
[ -n "$DB_USER" ] || fail "PGBOUNCER_USER is empty (the database role the workers log in as)"
case "$AUTH_TYPE" in
  trust) ;;
  scram-sha-256|md5|plain) [ -n "$PASSWORD" ] || fail "PGBOUNCER_PASSWORD is empty (required for PGBOUNCER_AUTH_TYPE=$AUTH_TYPE)" ;;
  *) fail "PGBOUNCER_AUTH_TYPE=$AUTH_TYPE (expected scram-sha-256, md5, plain or trust)" ;;
esac
for pair in "PGBOUNCER_DB_PORT=$DB_PORT" "PGBOUNCER_POOL_SIZE=$POOL_SIZE" \
            "PGBOUNCER_MAX_CLIENT_CONN=$MAX_CLIENT_CONN" "PGBOUNCER_LISTEN_PORT=$LISTEN_PORT"; do
  case "${pair#*=}" in
    ''|*[!0-9]*|0) fail "$pair (expected a positive integer)" ;;
  esac
done

umask 077
mkdir -p "$RUN_DIR"
# The auth file holds the plain password: PgBouncer needs it to log in to the server with SCRAM
# on the client's behalf. A double quote inside a quoted field is written twice.
printf '"%s" "%s"\n' "$(printf '%s' "$DB_USER" | sed 's/"/""/g')" "$(printf '%s' "$PASSWORD" | sed 's/"/""/g')" \
  > "$RUN_DIR/userlist.txt"

cat > "$RUN_DIR/pgbouncer.ini" <<INI
[databases]
; Any database name is forwarded to the server under the same name (the study database, and
; the per-test scratch databases in tests/reliability).
* = host=$DB_HOST port=$DB_PORT

[pgbouncer]
listen_addr = $LISTEN_ADDR
listen_port = $LISTEN_PORT
unix_socket_dir =
auth_type = $AUTH_TYPE
auth_file = $RUN_DIR/userlist.txt
admin_users = $DB_USER
; Transaction pooling: a server connection serves one client for one transaction. regsweep
; holds no session state across transactions (no SET, advisory locks, LISTEN, temp tables or
; server-side prepared statements: psycopg2 sends plain queries), which tests/reliability/
; test_pgbouncer.py proves for every database path of a worker.
pool_mode = transaction
default_pool_size = $POOL_SIZE
min_pool_size = 0
reserve_pool_size = 0
; The hard cap on server connections per database, whatever the number of users.
max_db_connections = $POOL_SIZE
max_client_conn = $MAX_CLIENT_CONN
; A client waits this long for a free server connection before its query fails (db_call retries).
query_wait_timeout = 120
server_idle_timeout = 60
server_lifetime = 1800
; Sent by some drivers at start-up; harmless to drop.
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
INI

exec pgbouncer "$RUN_DIR/pgbouncer.ini"
