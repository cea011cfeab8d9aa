#!/bin/sh
# Postgres sized for the container it runs in: the memory settings follow the container's
# memory limit (cgroup v2 or v1), pg_stat_statements is loaded, and slow statements are
# logged. Then the official image's entrypoint starts it as usual.
#
# Usage: postgres-entrypoint.sh [postgres] [-c NAME=VALUE...]   (the container's command;
#        options given here come last and win)
#
#   shared_buffers        1/4 of the limit      effective_cache_size  3/4 of the limit
#   maintenance_work_mem  1/16 of the limit     work_mem              1/256 (at least 4 MB)
#   log_min_duration_statement  DB_LOG_MIN_DURATION_MS (500 ms; -1 turns it off)
#
# Without a limit (or one the kernel reports as "unlimited") it sizes for 1 GiB.
set -o errexit -o nounset

limit_bytes() {
    for file in /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes; do
        if [ -r "$file" ]; then
            read -r value <"$file"
            case $value in
                '' | max) ;;
                *) echo "$value" && return ;;
            esac
        fi
    done
    echo 0
}

mb=$(($(limit_bytes) / 1048576))
# cgroup v1 reports "no limit" as a number near 2^63: anything above 1 TiB is no limit here.
if [ "$mb" -le 0 ] || [ "$mb" -gt 1048576 ]; then
    mb=1024
fi
work=$((mb / 256))
[ "$work" -ge 4 ] || work=4

[ "${1:-}" != postgres ] || shift # the image's own command, kept by some runtimes
exec docker-entrypoint.sh postgres \
    -c "shared_buffers=$((mb / 4))MB" \
    -c "effective_cache_size=$((mb * 3 / 4))MB" \
    -c "maintenance_work_mem=$((mb / 16))MB" \
    -c "work_mem=${work}MB" \
    -c shared_preload_libraries=pg_stat_statements \
    -c pg_stat_statements.track=top \
    -c "log_min_duration_statement=${DB_LOG_MIN_DURATION_MS:-500}" \
    "$@"
