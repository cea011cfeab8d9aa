#!/bin/sh
# Deploy (or update) the monitoring stack (Prometheus, Alertmanager, the exporters) beside the
# Swarm stack STACK_NAME, wait until Prometheus and Alertmanager run, and say where they are.
#
# Usage: deploy-swarm-monitoring.sh STACK_NAME [STACK_FILE]
#        (`make deploy-monitoring`; STACK_FILE: docker-stack.monitoring.yml)
#
# Environment: the values docker-stack.monitoring.yml reads (the Makefile loads the env file
# into it), DEPLOY_TIMEOUT=300 (seconds to wait), DOCKER=docker (the client to run).
#
# The monitoring stack is STACK_NAME-monitoring, on STACK_NAME's networks and secrets: deploy
# STACK_NAME first (`make deploy`). Swarm cannot publish a port on 127.0.0.1 only, so nothing
# is published: Prometheus and Alertmanager are reached at their addresses on this node's
# docker_gwbridge, which only this host reaches. POSIX sh.
set -o errexit -o nounset

if [ $# -lt 1 ]; then
    sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0" >&2
    exit 64
fi
stack=$1
file=${2:-docker-stack.monitoring.yml}
timeout=${DEPLOY_TIMEOUT:-300}
docker=${DOCKER:-docker}
monitoring="${stack}-monitoring"
# shellcheck source=scripts/swarm-lib.sh
. "$(dirname "$0")/swarm-lib.sh"

if ! "$docker" network inspect "${stack}_backend" >/dev/null 2>&1; then
    echo "no Swarm stack $stack on this node (network ${stack}_backend): deploy it first (make deploy)" >&2
    exit 1
fi

CONFIGS_VERSION=$(configs_version "$file")  # as docker-stack.yml's
export CONFIGS_VERSION STACK_NAME="$stack"

"$docker" stack deploy --prune -c "$file" "$monitoring"

# address SERVICE: the address of its task on this node's docker_gwbridge.
address() {
    container=$("$docker" ps --quiet --no-trunc --filter "label=com.docker.swarm.service.name=$1" \
        | head -n 1)
    [ -n "$container" ] || return 0
    "$docker" network inspect docker_gwbridge \
        --format "{{range \$id, \$c := .Containers}}{{if eq \$id \"$container\"}}{{\$c.IPv4Address}}{{end}}{{end}}" \
        | cut -d / -f 1
}

deadline=$(( $(date +%s) + timeout ))
until converged "${monitoring}_prometheus" && converged "${monitoring}_alertmanager" \
        && [ -n "$(address "${monitoring}_prometheus")" ] && [ -n "$(address "${monitoring}_alertmanager")" ]; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "Prometheus and Alertmanager do not run after ${timeout}s; see docker stack ps $monitoring" >&2
        "$docker" stack ps --no-trunc --format '{{.Name}}: {{.CurrentState}} {{.Error}}' \
            "$monitoring" >&2 2>/dev/null || true
        exit 1
    fi
    sleep 2  # polling interval, bounded by the deadline
done

prometheus=$(address "${monitoring}_prometheus")
alertmanager=$(address "${monitoring}_alertmanager")
echo "Prometheus: http://$prometheus:9090/alerts (targets: /targets)"
echo "Alertmanager: http://$alertmanager:9093/"
echo "    on this node only: from elsewhere, ssh -L 9090:$prometheus:9090 -L 9093:$alertmanager:9093 HOST"
echo "    (the addresses change when a task is replaced: make deploy-monitoring prints them again)"
echo "    what each alert means: docs/operations.md#monitoring-and-alerts"
