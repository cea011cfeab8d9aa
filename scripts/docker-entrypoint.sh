#!/bin/sh
# Container entrypoint: one image, many roles. Compose (or `docker run`) picks the mode.
#
# Usage: docker-entrypoint.sh MODE [ARGS...]
#   prod      serve with gunicorn, whose master first waits for the database and prepares
#             (the image's default)
#   dev       wait for the database, prepare, serve with uvicorn --reload
#   worker    wait for the database, run the background worker (ARGS go to the worker)
#   migrate   wait for the database, upgrade the schema to head, exit
#   shell     Python shell with the app loaded; `shell -c CODE` runs CODE and exits
#   *         anything else runs as given, e.g. `docker run IMAGE python -V`
#
# "Prepare" (`python -m app prepare`; in prod mode the same steps inside gunicorn's master)
# is driven by the environment
# (documented in .env.*.example), checked before anything runs:
#   RUN_MIGRATIONS=true    migrate to head first; on Postgres an advisory lock makes
#                          parallel replicas migrate one at a time, never twice
#   CREATE_SUPERUSER=true  create the ADMIN_* superuser if it does not exist
#   DB_WAIT_TIMEOUT=60     seconds to wait for the database before giving up (at once,
#                          exit 2, when it refuses the password, user or database name)
#
# POSIX sh (the image may be Debian or Alpine). The final process is exec'd, so it is
# PID 1 (or tini's child) and receives SIGTERM directly.
set -o errexit -o nounset

log() {
    # One JSON line, like every other log line of the container.
    printf '{"level":"%s","logger":"entrypoint","message":"%s"}\n' "$1" "$2"
}

# One log line, then stop with the failed command's own status (2: configuration, 1: the
# database), so whoever started the container can tell them apart.
give_up() {
    status=$1
    shift
    log error "$*"
    exit "$status"
}

wait_for_database() {
    python -m app wait-for-db --json || give_up "$?" "database not reachable: giving up"
}

prepare() {
    # The configuration is checked first: a bad value stops here, with one line, before
    # gunicorn starts workers.
    python -m app prepare --json || give_up "$?" "preparation failed: not starting"
}

mode="${1:-prod}"
[ $# -gt 0 ] && shift

case "$mode" in
    prod)
        # gunicorn's master prepares (gunicorn_config.py): one Python start, not two.
        log info "starting gunicorn"
        exec gunicorn --config /app/gunicorn_config.py "$@" "app.main:create_app()"
        ;;
    dev)
        prepare
        log info "starting uvicorn with reload"
        exec python -m app serve --reload --host "${HOST:-0.0.0.0}" --port "${PORT:-8000}" "$@"
        ;;
    worker)
        if ! python -c "import app.worker" 2>/dev/null; then
            log error "worker mode: this build has no background worker (app/worker)"
            exit 64
        fi
        wait_for_database
        log info "starting worker"
        exec python -m app worker "$@"
        ;;
    migrate)
        wait_for_database
        exec python -m app migrate "$@"
        ;;
    shell)
        exec python -m app shell "$@"
        ;;
    -h|--help|help)
        sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"
        ;;
    *)
        exec "$mode" "$@"
        ;;
esac
