#!/bin/sh
# Redis with its password read from a file, never from the command line or the environment
# of the container: the official image's entrypoint is called with a config file that holds
# `requirepass`, written at start into a private tmpfs.
#
# Usage: redis-entrypoint.sh [REDIS-SERVER-OPTIONS...]   start Redis (the container's command)
#        redis-entrypoint.sh ping                        healthcheck: exit 0 if Redis answers PONG
#
# The password comes from REDIS_PASSWORD_FILE (a compose or Swarm secret), or from
# REDIS_PASSWORD where a plain variable is acceptable (the development stack).
set -o errexit -o nounset

CONFIG_DIR=/run/redis

password() {
    if [ -n "${REDIS_PASSWORD_FILE:-}" ]; then
        if [ ! -r "$REDIS_PASSWORD_FILE" ]; then
            echo "redis: REDIS_PASSWORD_FILE=$REDIS_PASSWORD_FILE cannot be read" >&2
            exit 2
        fi
        # The value as the app reads it: surrounding whitespace and the final newline removed.
        tr -d '\r\n' <"$REDIS_PASSWORD_FILE" | sed 's/^[[:space:]]*//;s/[[:space:]]*$//'
    elif [ -n "${REDIS_PASSWORD:-}" ]; then
        printf '%s' "$REDIS_PASSWORD"
    else
        echo "redis: set REDIS_PASSWORD_FILE (or REDIS_PASSWORD); refusing to run without a password" >&2
        exit 2
    fi
}

if [ "${1:-}" = ping ]; then
    # redis-cli reads REDISCLI_AUTH: the password stays out of this command's arguments.
    REDISCLI_AUTH=$(password)
    export REDISCLI_AUTH
    [ "$(redis-cli ping)" = PONG ]
    exit
fi

secret=$(password)
umask 077
# Inside double quotes Redis reads \" and \\ as escapes.
escaped=$(printf '%s' "$secret" | sed 's/[\\"]/\\&/g')
printf 'requirepass "%s"\n' "$escaped" >"$CONFIG_DIR/auth.conf"
# The image's entrypoint drops to the redis user, who must read the file.
chown redis "$CONFIG_DIR/auth.conf"
exec docker-entrypoint.sh redis-server "$CONFIG_DIR/auth.conf" "$@"
