#!/bin/sh
# What the Swarm scripts share (deploy-swarm.sh, deploy-swarm-monitoring.sh): functions only.
#
# Usage: . "$(dirname "$0")/swarm-lib.sh"     (sourced, after the script has set `docker`)
#
# POSIX sh.
# shellcheck disable=SC2154 # docker: set by the script that sources this
set -o errexit -o nounset

# converged SERVICE: every replica the service wants is running (healthy, with a healthcheck).
converged() {
    replicas=$("$docker" service ls --filter "name=$1" --format '{{.Name}} {{.Replicas}}' \
        | sed -n "s|^$1 ||p")
    running=${replicas%%/*}
    wanted=${replicas#*/}
    wanted=${wanted%% *}
    [ -n "$running" ] && [ "$running" = "$wanted" ] && [ "$wanted" != 0 ]
}

# configs_version STACK_FILE: Swarm configs are immutable, so each stack names its configs
# after their files' content (`name: ..._${CONFIGS_VERSION}`): a checksum of every file the
# stack file's `configs:` entries read (`  name: {file: PATH, ...}`).
configs_version() {
    (cd "$(dirname "$1")" \
        && sed -n 's/^  [a-z_]*: {file: \([^,}]*\).*/\1/p' "$(basename "$1")" | xargs cat \
        | cksum | cut -d ' ' -f 1)
}
