#!/bin/sh
# Start (or update) a compose stack and wait until it is healthy; say why when it is not.
#
# Usage: stack-up.sh SERVICE COMPOSE_COMMAND...      (`make prod`, `make staging`, `make dev`)
#   e.g. stack-up.sh app docker compose --project-name shipshape --env-file .env.prod \
#            -f docker-compose.yml -f docker-compose.prod.yml
#
# 1. Builds the images and checks the configuration with SERVICE's own `check-config` in a
#    one-off container, before the database starts: a wrong value ends here with one line
#    naming the variable (exit 2), not in a restart loop, and leaves no new volume behind.
# 2. `up --detach --wait`. When a service does not get healthy, prints each failing
#    container with the last lines of its log, explains a database volume initialised with
#    another password, and says how to stop the restarting containers.
#
# Environment: DOCKER=docker (the client), STACK_ENV=prod (named in the hints), STACK_PROJECT
# (the compose project, whose volumes a refused first start removes again). POSIX sh.
set -o errexit -o nounset

if [ $# -lt 3 ]; then
    sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0" >&2
    exit 64
fi
service=$1
shift
docker=${DOCKER:-docker}
env=${STACK_ENV:-prod}
project=${STACK_PROJECT:-}

volumes() {  # the stack's volumes (none listed without STACK_PROJECT)
    [ -z "$project" ] || "$docker" volume ls --quiet --filter "label=com.docker.compose.project=$project"
}

"$@" build
existing=$(volumes | tr '\n' ' ')
if ! "$@" run --rm --no-deps --no-TTY "$service" python -m app check-config -q; then
    # The one-off container made the stack's volumes: a first start leaves none behind.
    for volume in $(volumes); do
        case " $existing " in
            *" $volume "*) ;;
            *) "$docker" volume rm "$volume" >/dev/null 2>&1 || true ;;
        esac
    done
    echo "the configuration is not valid: nothing was started; fix the value named above" >&2
    exit 2
fi

# "/name status health", e.g. "/shipshape-app-1 running unhealthy"
state() {
    "$docker" inspect --format \
        '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$1"
}

# Containers an earlier failed start left restarting, exited or unhealthy serve nothing, and
# `up --wait` would give up on them at once instead of starting them afresh.
for container in $("$@" ps --all --quiet); do
    case "$(state "$container")" in
        *" restarting "*|*" exited "*|*" unhealthy") "$docker" rm --force "$container" >/dev/null ;;
    esac
done

status=0
"$@" up --detach --wait || status=$?
[ "$status" -ne 0 ] || exit 0

echo >&2
echo "the stack did not get healthy:" >&2
logs=$(mktemp)
trap 'rm -f "$logs"' EXIT
for container in $("$@" ps --all --quiet); do
    state=$(state "$container")
    case "$state" in
        *" running healthy"|*" running "|*" created "*) continue ;;  # created: never started
        *" exited "*)  # a one-shot service (tls-bootstrap) that did its job is no failure
            [ "$("$docker" inspect --format '{{.State.ExitCode}}' "$container")" != 0 ] || continue ;;
    esac
    echo "--- ${state#/} (last lines of its log):" >&2
    "$docker" logs --tail 8 "$container" >"$logs" 2>&1 || true
    cut -c 1-300 "$logs" | sed 's/^/    /' >&2  # a JSON line can be long: its start says it
    if grep -q "password authentication failed" "$logs"; then
        cat >&2 <<EOF

The database refused the password. Postgres sets it once, when its volume is first
created: this volume was initialised with another password (an earlier start, or a
secret file written since). Either
  - make the database use the current secret: make db-password ENV=$env (or put the
    password the volume was created with back into the db_password secret file), or
  - start from an empty database, deleting all its data: make destroy ENV=$env
EOF
    fi
done
echo >&2
echo "containers that keep restarting go on until stopped: make down ENV=$env" >&2
exit "$status"
