#!/bin/sh
# Postgres backups: pg_dump custom-format files with a sha256 beside each, kept by age.
#
# Usage: backup.sh [--once | --schedule]
#   --once       one backup now, then prune (the default; `make backup`)
#   --schedule   run forever: a backup at every BACKUP_SCHEDULE (the `backup` service)
#
# Environment:
#   PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE   the database (libpq variables)
#   DB_PASSWORD_FILE            a file holding the password (a secret), instead of PGPASSWORD
#   BACKUP_DIR=/backups         daily/ and weekly/ go below it
#   BACKUP_SCHEDULE=02:30       daily at HH:MM (UTC), or an interval: 900s, 30m, 6h
#   BACKUP_KEEP_DAILY=7         newest daily backups kept
#   BACKUP_KEEP_WEEKLY=4        newest weekly backups kept (one a week, copied from a daily)
#   BACKUP_COPY_COMMAND=        run with the new file as $1 and its checksum as $2, e.g.
#                               'aws s3 cp "$1" s3://bucket/ && aws s3 cp "$2" s3://bucket/'
#
# Started as root, it hands the backup folders to the postgres user and runs as that user.
# A backup is written to a temporary name and renamed only when pg_dump and the checksum
# succeeded, so a half-written dump never looks like a backup. POSIX sh (runs in the
# postgres image, Debian or Alpine). Exits non-zero when a backup fails.
set -o errexit -o nounset

# The password from a secret file goes to libpq in this process's environment only.
if [ -z "${PGPASSWORD:-}" ] && [ -n "${DB_PASSWORD_FILE:-}" ]; then
    PGPASSWORD=$(cat "$DB_PASSWORD_FILE")
    export PGPASSWORD
fi

dir="${BACKUP_DIR:-/backups}"

# Started as root (Docker creates the backups volume owned by root): give the folders to the
# image's postgres user and go on as that user. Deleting old dumps needs only the folders.
if [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1; then
    mkdir -p "$dir/daily" "$dir/weekly"
    chown postgres:postgres "$dir" "$dir/daily" "$dir/weekly"
    for tool in gosu su-exec; do  # the official images carry one of these
        if command -v "$tool" >/dev/null 2>&1; then
            exec "$tool" postgres /bin/sh "$0" "$@"
        fi
    done
    exec setpriv --reuid=postgres --regid=postgres --init-groups /bin/sh "$0" "$@"
fi

keep_daily="${BACKUP_KEEP_DAILY:-7}"
keep_weekly="${BACKUP_KEEP_WEEKLY:-4}"
database="${PGDATABASE:?PGDATABASE is required}"

log() {
    printf '{"level":"%s","logger":"backup","message":"%s"}\n' "$1" "$2"
}

prune() {
    # Keep the newest $2 dumps of folder $1 (names sort by time), with their checksums.
    find "$1" -maxdepth 1 -name '*.dump' | sort -r | tail -n +"$(( $2 + 1 ))" | while read -r old; do
        rm -f "$old" "$old.sha256"
        log info "pruned $(basename "$old")"
    done
}

needs_weekly() {
    # A weekly copy when none of the last 7 days exists.
    [ -z "$(find "$dir/weekly" -name '*.dump' -mtime -7 2>/dev/null | head -n 1)" ]
}

backup_once() {
    mkdir -p "$dir/daily" "$dir/weekly"
    name="$database-$(date -u +%Y%m%dT%H%M%SZ).dump"
    while [ -e "$dir/daily/$name" ]; do
        # Names sort by time, so that pruning keeps the newest: one backup per second.
        sleep 1
        name="$database-$(date -u +%Y%m%dT%H%M%SZ).dump"
    done
    partial="$dir/daily/.$name.partial"
    log info "backing up $database to daily/$name"
    if ! pg_dump --format=custom --compress=6 --file="$partial" "$database"; then
        rm -f "$partial"
        log error "pg_dump of $database failed"
        return 1
    fi
    mv "$partial" "$dir/daily/$name"
    (cd "$dir/daily" && sha256sum "$name" > "$name.sha256")
    if needs_weekly; then
        cp "$dir/daily/$name" "$dir/weekly/$name"
        (cd "$dir/weekly" && sha256sum "$name" > "$name.sha256")
        log info "weekly copy weekly/$name"
    fi
    if [ -n "${BACKUP_COPY_COMMAND:-}" ]; then
        if sh -c "$BACKUP_COPY_COMMAND" backup-copy "$dir/daily/$name" "$dir/daily/$name.sha256"; then
            log info "copied $name off the host"
        else
            log error "BACKUP_COPY_COMMAND failed for $name (the local backup is kept)"
            return 1
        fi
    fi
    prune "$dir/daily" "$keep_daily"
    prune "$dir/weekly" "$keep_weekly"
    log info "backup $name done ($(wc -c < "$dir/daily/$name") bytes)"
}

seconds_until_next() {
    schedule="${BACKUP_SCHEDULE:-02:30}"
    case "$schedule" in
        *[0-9]s) echo "${schedule%s}" ;;
        *[0-9]m) echo "$(( ${schedule%m} * 60 ))" ;;
        *[0-9]h) echo "$(( ${schedule%h} * 3600 ))" ;;
        [0-2][0-9]:[0-5][0-9])
            # "1" prefixes keep 08 and 09 from being read as octal.
            target=$(( (1${schedule%%:*} - 100) * 3600 + (1${schedule##*:} - 100) * 60 ))
            now=$(( (1$(date -u +%H) - 100) * 3600 + (1$(date -u +%M) - 100) * 60 + 1$(date -u +%S) - 100 ))
            echo "$(( (target - now + 86400) % 86400 ))"
            ;;
        *) log error "BACKUP_SCHEDULE=$schedule is neither HH:MM nor an interval like 30m"; exit 2 ;;
    esac
}

case "${1:---once}" in
    --once)
        backup_once
        ;;
    --schedule)
        log info "scheduled backups of $database: ${BACKUP_SCHEDULE:-02:30}"
        while :; do
            wait_for="$(seconds_until_next)"
            sleep "$wait_for" &
            wait $!
            backup_once || log error "backup failed; next attempt at the next slot"
        done
        ;;
    -h|--help)
        sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
        ;;
    *)
        echo "backup.sh: unknown argument: $1 (see --help)" >&2
        exit 2
        ;;
esac
