#!/bin/sh
# Replace the containers of a compose service one by one, without dropping a request.
#
# Usage: rollout.sh SERVICE COMPOSE-COMMAND...
#   e.g. rollout.sh app docker compose --env-file .env.prod -f docker-compose.yml -f docker-compose.prod.yml
#   (`make rollout` runs it for the app, after building the image, then updates the worker)
#
# `docker compose up` recreates every replica of a service at once: an outage. This starts
# as many new containers as are running (the current image and configuration), waits until
# each is healthy, then stops the old ones one at a time (SIGTERM: they finish their requests
# while nginx sends new ones to the others). When a new container does not become healthy
# within ROLLOUT_TIMEOUT seconds (default 180), the new ones are removed and the old ones keep
# serving: nothing changed. POSIX sh.
set -o errexit -o nounset

if [ $# -lt 2 ]; then
    sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0" >&2
    exit 64
fi
service=$1
shift
timeout="${ROLLOUT_TIMEOUT:-180}"

log() {
    printf 'rollout %s: %s\n' "$service" "$*"
}

short() {
    printf '%.12s' "$1"
}

# Container ids, space-separated (compose prints one per line).
old=$("$@" ps --quiet "$service" | tr '\n' ' ')
count=$(printf '%s' "$old" | wc -w | tr -d ' ')
if [ "$count" -eq 0 ]; then
    log "no running container: start the stack first (make prod)" >&2
    exit 1
fi

log "starting $count new container(s) beside the $count running"
"$@" up --detach --no-deps --no-recreate --scale "$service=$((count * 2))" "$service"
new=""
for id in $("$@" ps --quiet "$service"); do
    case " $old " in
        *" $id "*) ;;
        *) new="$new $id" ;;
    esac
done

deadline=$(( $(date +%s) + timeout ))
for id in $new; do
    while :; do
        state=$(docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id")
        case "$state" in
            healthy) log "$(short "$id") healthy"; break ;;
            unhealthy|exited|dead) reason="$state" ;;
            *) reason="" ;;
        esac
        if [ -n "$reason" ] || [ "$(date +%s)" -ge "$deadline" ]; then
            log "new container $(short "$id") is ${reason:-not healthy after ${timeout}s}: removing the new ones, the old keep serving" >&2
            # shellcheck disable=SC2086 # one argument per container id
            docker rm --force $new >/dev/null
            exit 1
        fi
        sleep 1  # polling interval, bounded by the deadline
    done
done

for id in $old; do
    log "stopping $(short "$id") (it finishes its requests first)"
    docker stop "$id" >/dev/null
    docker rm "$id" >/dev/null
done
log "done: $count container(s) replaced"
