#!/bin/sh
# Restore a Postgres backup made by backup.sh, after proving the file is sound.
#
# Usage: restore.sh FILE.dump
#        restore.sh --end-maintenance
#   PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE   the database to restore into
#   DB_PASSWORD_FILE            a file holding the password (a secret), instead of PGPASSWORD
#   KEEP_MAINTENANCE=1          leave writes refused after a restore (for the migrations);
#                               `restore.sh --end-maintenance` ends it
#
# Steps, each of which stops the restore when it fails, before anything is dropped:
#   1. FILE.sha256 exists and matches FILE
#   2. `pg_restore --list` reads the archive
# Then:
#   3. maintenance: the database becomes read-only for every new session
#      (default_transaction_read_only), so a write the app would acknowledge and the restore
#      would then overwrite is refused instead (the API answers 503); reads go on
#   4. every other session of the database is terminated (the app reconnects, read-only)
#   5. pg_restore --clean --if-exists --exit-on-error --single-transaction: the database
#      ends up either fully restored or untouched
#   6. maintenance ends (unless KEEP_MAINTENANCE=1), and the sessions are terminated again
#      so the app's connections can write; it ends on a failure as well
# Run the migrations afterwards (`make restore` does, before maintenance ends): a backup
# from an older release is brought up to the running code's schema. POSIX sh.
set -o errexit -o nounset

# The password from a secret file goes to libpq in this process's environment only.
if [ -z "${PGPASSWORD:-}" ] && [ -n "${DB_PASSWORD_FILE:-}" ]; then
    PGPASSWORD=$(cat "$DB_PASSWORD_FILE")
    export PGPASSWORD
fi

file="${1:-}"
database="${PGDATABASE:?PGDATABASE is required}"

log() {
    printf '{"level":"%s","logger":"restore","message":"%s"}\n' "$1" "$2"
}

fail() {
    log error "$1"
    exit 1
}

# This script's own sessions write, maintenance or not (the database's read-only default
# applies to everyone else's).
PGOPTIONS="-c default_transaction_read_only=off"
export PGOPTIONS

# SQL on the database to restore, with its name as the psql variable :"db".
sql() {
    psql --no-psqlrc --quiet --tuples-only --no-align --set ON_ERROR_STOP=1 \
        --set db="$database" --dbname "$database"
}

terminate_sessions() {
    echo "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid();" | sql
}

end_maintenance() {
    echo 'ALTER DATABASE :"db" RESET default_transaction_read_only;' | sql
    terminated="$(terminate_sessions)"
    log info "maintenance ended: writes accepted again ($terminated sessions reconnect)"
}

if [ "$file" = "--end-maintenance" ]; then
    end_maintenance
    exit 0
fi

[ -n "$file" ] || { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ -f "$file" ] || fail "no such backup: $file"
[ -f "$file.sha256" ] || fail "no checksum file $file.sha256: refusing to restore an unverified backup"

expected="$(cut -d ' ' -f 1 < "$file.sha256")"
actual="$(sha256sum < "$file" | cut -d ' ' -f 1)"
[ "$expected" = "$actual" ] || fail "checksum mismatch for $(basename "$file"): the file is damaged; nothing was changed"
log info "checksum ok"

entries="$(pg_restore --list "$file" 2>/dev/null | grep -cv '^;')" \
    || fail "pg_restore cannot read $(basename "$file"): nothing was changed"
log info "archive readable: $entries entries"

echo 'ALTER DATABASE :"db" SET default_transaction_read_only = on;' | sql
trap 'end_maintenance' EXIT
# The sessions opened before are writable still: from their end on, every session is
# read-only, and that moment is when maintenance begins.
terminated="$(terminate_sessions)"
since="$(echo "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC',
                              'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"');" | sql)"
log info "terminated $terminated other sessions of $database"
log info "maintenance since $since: writes are refused (503) until the restore ends"

pg_restore --clean --if-exists --no-owner --exit-on-error --single-transaction \
    --dbname "$database" "$file" || fail "pg_restore failed: the transaction was rolled back, $database is unchanged"
log info "restored $(basename "$file") into $database"
if [ "${KEEP_MAINTENANCE:-0}" = 1 ]; then
    trap - EXIT
    log info "writes stay refused: run the migrations, then restore.sh --end-maintenance"
fi
