#!/bin/sh
# The Redis exporter's password file, written from the Redis password's secret file: the
# exporter reads a JSON object of Redis address to password, not a bare password.
#
# Usage: redis-exporter-config.sh FILE   (the one-shot redis-exporter-config service of
#                                         docker-compose.monitoring.yml)
#
#   REDIS_ADDR           the address as the exporter names it (redis://redis:6379)
#   REDIS_PASSWORD_FILE  the password, as Redis itself reads it
set -o errexit -o nounset

if [ $# -ne 1 ]; then
    sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0" >&2
    exit 64
fi
if [ ! -r "$REDIS_PASSWORD_FILE" ]; then
    echo "redis-exporter-config: REDIS_PASSWORD_FILE=$REDIS_PASSWORD_FILE cannot be read" >&2
    exit 2
fi
# The value as Redis reads it (surrounding whitespace and line ends removed), as a JSON
# string: backslashes and quotes escaped.
password=$(tr -d '\r\n' <"$REDIS_PASSWORD_FILE" | sed 's/^[[:space:]]*//;s/[[:space:]]*$//')
escaped=$(printf '%s' "$password" | sed 's/\\/\\\\/g; s/"/\\"/g')

umask 022  # the exporter runs as a user of its own
printf '{"%s": "%s"}\n' "$REDIS_ADDR" "$escaped" >"$1.tmp"
exec mv "$1.tmp" "$1"
