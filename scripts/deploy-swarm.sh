#!/bin/sh
# Deploy (or update) the Swarm stack and wait until the rolling updates of the services that
# run the app image (app and worker) have ended.
#
# Usage: deploy-swarm.sh STACK_NAME [STACK_FILE]     (`make deploy`; STACK_FILE: docker-stack.yml)
#
# Environment: the values docker-stack.yml reads (the Makefile loads the env file into it),
# DEPLOY_TIMEOUT=900 (seconds to wait for the update), DOCKER=docker (the client to run).
#
# Swarm rolls a service back by itself when its new tasks do not get healthy (for the app:
# ready once, scripts/healthcheck.py), but only that service: a broken image that passes the
# worker's own check would leave the worker on it while the app is back on the old one. So
# when one of the two was rolled back, the other is rolled back too, and this exits 1: the
# stack is never half old, half new. A service whose task template the deploy left as it was
# (the same image and settings) has no update to wait for. A new stack is waited for until
# every replica of both runs (healthy). POSIX sh.
set -o errexit -o nounset

if [ $# -lt 1 ]; then
    sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0" >&2
    exit 64
fi
stack=$1
file=${2:-docker-stack.yml}
timeout=${DEPLOY_TIMEOUT:-900}
docker=${DOCKER:-docker}
app="${stack}_app"
worker="${stack}_worker"
# shellcheck source=scripts/swarm-lib.sh
. "$(dirname "$0")/swarm-lib.sh"

inspect() {  # SERVICE TEMPLATE
    "$docker" service inspect --format "$2" "$1" 2>/dev/null || true
}
version() { inspect "$1" '{{.Version.Index}}'; }
# What the tasks run: a change here, and only here, makes Swarm replace them. (`stack deploy`
# submits every service again, so the version index changes even when nothing else does.)
template() { inspect "$1" '{{json .Spec.TaskTemplate}}'; }
started() { inspect "$1" '{{if .UpdateStatus}}{{.UpdateStatus.StartedAt}}{{end}}'; }

# update_state SERVICE STARTED_BEFORE: updating, completed or rolled_back (the update that
# began after STARTED_BEFORE; until Swarm has begun it, updating).
update_state() {
    state=$(inspect "$1" '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}')
    if [ -z "$state" ] || [ "$(started "$1")" = "$2" ]; then
        echo updating
        return
    fi
    case "$state" in
        completed) echo completed ;;
        rollback_completed|rollback_paused|paused) echo rolled_back ;;
        *) echo updating ;;
    esac
}

app_version=$(version "$app")
app_template=$(template "$app")
app_started=$(started "$app")
worker_template=$(template "$worker")
worker_started=$(started "$worker")

case "${PUBLISH_IP:-0.0.0.0}" in
    0.0.0.0|"") ;;
    *) echo "warning: Swarm publishes nginx's ports on every address of the node (it cannot bind a" \
            "service port to one address); PUBLISH_IP=$PUBLISH_IP is not applied: limit access with" \
            "the host's firewall" >&2 ;;
esac

# The image the app runs now becomes the one `make rollback` returns to, unless this deploy
# keeps it (then the earlier record stays).
deploying="${APP_IMAGE:-shipshape}:${APP_TAG:-}"
running=$(inspect "$app" '{{.Spec.TaskTemplate.ContainerSpec.Image}}')
running=${running%@sha256:*}
if [ -n "$running" ] && [ "$running" != "$deploying" ]; then
    APP_PREVIOUS_IMAGE=$running
else
    APP_PREVIOUS_IMAGE=$(inspect "$app" '{{index .Spec.Labels "shipshape.previous-image"}}')
fi
export APP_PREVIOUS_IMAGE

CONFIGS_VERSION=$(configs_version "$file")  # see docker-stack.yml
export CONFIGS_VERSION

"$docker" stack deploy --prune --with-registry-auth -c "$file" "$stack"
echo "deploying ${APP_IMAGE:-shipshape}:${APP_TAG:-?} to $stack"

deadline=$(( $(date +%s) + timeout ))
if [ -z "$app_version" ]; then
    echo "new stack: waiting for every replica of $app and $worker to run"
    until converged "$app" && converged "$worker"; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "the new stack does not run after ${timeout}s; see docker service ps $app $worker" >&2
            "$docker" service ps --no-trunc --format '{{.Name}} {{.Image}}: {{.CurrentState}} {{.Error}}' \
                "$app" "$worker" >&2 2>/dev/null || true
            exit 1
        fi
        sleep 2  # polling interval, bounded by the deadline
    done
    echo "$app and $worker: running"
    exit 0
fi
# A service whose task template the deploy left as it was has no update to wait for.
[ "$(template "$app")" != "$app_template" ] || app_started=unchanged
[ "$(template "$worker")" != "$worker_template" ] || worker_started=unchanged
if [ "$app_started" = unchanged ] && [ "$worker_started" = unchanged ]; then
    echo "$app and $worker unchanged: they already run this image and these settings"
    exit 0
fi

# rollback_other FAILED OTHER: report FAILED's rollback with its latest tasks (their states
# and errors say why), roll OTHER back too and fail.
rollback_other() {
    echo "$1: the update failed and Swarm rolled it back: rolling the ${2#"${stack}"_} back too" >&2
    # (Swarm keeps a few tasks per replica: the list is short.)
    "$docker" service ps --no-trunc --format '{{.Name}} {{.Image}}: {{.CurrentState}} {{.Error}}' \
        "$1" >&2 2>/dev/null || true
    "$docker" service rollback --detach "$2" >/dev/null 2>&1 \
        || echo "$2: no previous version to roll back to" >&2
    exit 1
}

while :; do
    app_state=completed
    worker_state=completed
    [ "$app_started" = unchanged ] || app_state=$(update_state "$app" "$app_started")
    [ "$worker_started" = unchanged ] || worker_state=$(update_state "$worker" "$worker_started")
    [ "$app_state" != rolled_back ] || rollback_other "$app" "$worker"
    [ "$worker_state" != rolled_back ] || rollback_other "$worker" "$app"
    if [ "$app_state" = completed ] && [ "$worker_state" = completed ]; then
        echo "$app and $worker: updated"
        # Configs of earlier deploys: Swarm refuses to remove one a service still uses.
        "$docker" config ls --quiet --filter "label=com.docker.stack.namespace=$stack" \
            | xargs "$docker" config rm >/dev/null 2>&1 || true
        exit 0
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "update not finished after ${timeout}s ($app: $app_state, $worker: $worker_state);" \
             "see docker service ps $app $worker" >&2
        exit 1
    fi
    sleep 2  # polling interval, bounded by the deadline
done
