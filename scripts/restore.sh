#!/bin/sh
# Restore a Postgres backup made by backup.sh, after proving the file is sound.
#
# Usage: restore.sh FILE.dump
#   PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE   the database to restore into
#   DB_PASSWORD_FILE            a file holding the password (a secret), instead of PGPASSWORD
#
# Steps, each of which stops the restore when it fails, before anything is dropped:
#   1. FILE.sha256 exists and matches FILE
#   2. `pg_restore --list` reads the archive
# Then:
#   3. every other session of the database is terminated (the app reconnects by itself)
#   4. pg_restore --clean --if-exists --exit-on-error --single-transaction: the database
#      ends up either fully restored or untouched
# Run the migrations afterwards (`make restore` does): a backup from an older release is
# brought up to the running code's schema. POSIX sh.
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

[ -n "$file" ] || { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ -f "$file" ] || fail "no such backup: $file"
[ -f "$file.sha256" ] || fail "no checksum file $file.sha256: refusing to restore an unverified backup"

expected="$(cut -d ' ' -f 1 < "$file.sha256")"
actual="$(sha256sum < "$file" | cut -d ' ' -f 1)"
[ "$expected" = "$actual" ] || fail "checksum mismatch for $(basename "$file"): the file is damaged; nothing was changed"
log info "checksum ok"

entries="$(pg_restore --list "$file" 2>/dev/null | grep -cv '^;')" \
    || fail "pg_restore cannot read $(basename "$file"): nothing was changed"
log info "archive readable: $entries entries"

terminated="$(psql --no-psqlrc --tuples-only --no-align --dbname "$database" --command \
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
     WHERE datname = current_database() AND pid <> pg_backend_pid()")"
log info "terminated $terminated other sessions of $database"

pg_restore --clean --if-exists --no-owner --exit-on-error --single-transaction \
    --dbname "$database" "$file" || fail "pg_restore failed: the transaction was rolled back, $database is unchanged"
log info "restored $(basename "$file") into $database"
