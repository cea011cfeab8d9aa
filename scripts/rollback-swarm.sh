#!/bin/sh
# Roll the Swarm stack's app and worker back to the image the app ran before its last
# update, both of them: never one old and one new.
#
# Usage: rollback-swarm.sh STACK_NAME              (`make rollback`)
#
# Environment: DOCKER=docker (the client to run).
#
# Decided from the images the services run and the app's label shipshape.previous-image
# (set by deploy-swarm.sh, reverted with the rest of the spec when Swarm rolls a failed update
# back), not from Swarm's previous specs: every `stack deploy` replaces those (with the current
# spec when nothing changed), and after Swarm rolled a failed update back the worker's is the
# failed image. The rolled-back image becomes the label, so a second rollback undoes the
# first. Exits 0 when both end up on the same image after a change, 1 when there was nothing
# to roll back to or a step failed. POSIX sh.
set -o errexit -o nounset

if [ $# -ne 1 ]; then
    sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0" >&2
    exit 64
fi
stack=$1
docker=${DOCKER:-docker}
app="${stack}_app"
worker="${stack}_worker"

inspect() {  # SERVICE TEMPLATE
    "$docker" service inspect --format "$2" "$1" 2>/dev/null || true
}
image() { inspect "$1" '{{.Spec.TaskTemplate.ContainerSpec.Image}}' | sed 's/@sha256:.*//'; }
recorded() { inspect "$app" '{{index .Spec.Labels "shipshape.previous-image"}}'; }

app_now=$(image "$app")
worker_now=$(image "$worker")
if [ -z "$app_now" ] || [ -z "$worker_now" ]; then
    echo "no services $app and $worker: is the stack $stack deployed?" >&2
    exit 1
fi

changed=no
app_before=$(recorded)
if [ -n "$app_before" ] && [ "$app_before" != "$app_now" ]; then
    target=$app_before
    echo "$app: rolling back from $app_now to $target"
    "$docker" service update --quiet --image "$target" \
        --label-add "shipshape.previous-image=$app_now" "$app" >/dev/null
    changed=yes
else
    target=$app_now
    echo "$app: runs $app_now, no earlier image recorded to roll back to"
fi

if [ "$worker_now" != "$target" ]; then
    echo "$worker: from $worker_now to $target, as the app"
    "$docker" service update --quiet --image "$target" "$worker" >/dev/null
    changed=yes
fi

app_now=$(image "$app")
worker_now=$(image "$worker")
if [ "$app_now" != "$target" ] || [ "$worker_now" != "$target" ]; then
    echo "rollback incomplete: $app runs $app_now, $worker runs $worker_now;" \
         "see docker service ps $app $worker" >&2
    exit 1
fi
if [ "$changed" = no ]; then
    echo "nothing to roll back: $app and $worker both run $target" >&2
    exit 1
fi
echo "rolled back: $app and $worker run $target"
