#!/bin/sh
# Deploy (or update) the Swarm stack and wait until the app's rolling update has ended.
#
# Usage: deploy-swarm.sh STACK_NAME [STACK_FILE]     (`make deploy`; STACK_FILE: docker-stack.yml)
#
# Environment: the values docker-stack.yml reads (the Makefile loads the env file into it),
# DEPLOY_TIMEOUT=900 (seconds to wait for the update), DOCKER=docker (the client to run).
#
# Swarm rolls a service back by itself when its new tasks do not get healthy, but only that
# service: a broken image that passes the worker's own check would leave the worker on it
# while the app is back on the old one. So when the app was rolled back, the worker is
# rolled back too, and this exits 1: the stack is never half old, half new. POSIX sh.
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

inspect() {
    "$docker" service inspect --format "$1" "$app" 2>/dev/null || true
}

version_before=$(inspect '{{.Version.Index}}')
update_before=$(inspect '{{if .UpdateStatus}}{{.UpdateStatus.StartedAt}}{{end}}')

case "${PUBLISH_IP:-0.0.0.0}" in
    0.0.0.0|"") ;;
    *) echo "warning: Swarm publishes nginx's ports on every address of the node (it cannot bind a" \
            "service port to one address); PUBLISH_IP=$PUBLISH_IP is not applied: limit access with" \
            "the host's firewall" >&2 ;;
esac

# Swarm configs are immutable: name them after their files' content (see docker-stack.yml).
CONFIGS_VERSION=$(cd "$(dirname "$file")" \
    && sed -n 's/^  [a-z_]*: {file: \([^,}]*\).*/\1/p' "$(basename "$file")" | xargs cat | cksum | cut -d ' ' -f 1)
export CONFIGS_VERSION

"$docker" stack deploy --prune --with-registry-auth -c "$file" "$stack"
echo "deploying ${APP_IMAGE:-shipshape}:${APP_TAG:-?} to $stack"

if [ -z "$version_before" ]; then
    echo "new stack: follow it with: docker service ps $app"
    exit 0
fi
if [ "$(inspect '{{.Version.Index}}')" = "$version_before" ]; then
    echo "$app unchanged"
    exit 0
fi

deadline=$(( $(date +%s) + timeout ))
while :; do
    state=$(inspect '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}')
    started=$(inspect '{{if .UpdateStatus}}{{.UpdateStatus.StartedAt}}{{end}}')
    if [ -n "$state" ] && [ "$started" != "$update_before" ]; then
        case "$state" in
            completed)
                echo "$app: updated"
                # Configs of earlier deploys: Swarm refuses to remove one a service still uses.
                "$docker" config ls --quiet --filter "label=com.docker.stack.namespace=$stack" \
                    | xargs "$docker" config rm >/dev/null 2>&1 || true
                exit 0
                ;;
            rollback_completed|rollback_paused|paused)
                echo "$app: the update failed and Swarm rolled it back ($state): rolling the worker back too" >&2
                "$docker" service rollback --detach "${stack}_worker" >/dev/null 2>&1 \
                    || echo "${stack}_worker: no previous version to roll back to" >&2
                exit 1
                ;;
        esac
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "$app: update not finished after ${timeout}s (state: ${state:-none}); see docker service ps $app" >&2
        exit 1
    fi
    sleep 2  # polling interval, bounded by the deadline
done
