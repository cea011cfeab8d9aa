#!/bin/sh
# Wait until a TCP host:port accepts connections, then optionally run a command.
#
# Usage: wait-for-it.sh HOST:PORT [-t TIMEOUT] [-q] [-- COMMAND [ARGS...]]
#   -t TIMEOUT  seconds to wait (default 30; 0 waits forever)
#   -q          no progress messages
#
# Exits 1 with a message when the port does not open in time; otherwise runs COMMAND with
# exec (so it becomes this process and receives signals) or exits 0.
# POSIX sh: runs in the app image and on Alpine. It uses nc when present, else Python.
set -o errexit -o nounset

usage() {
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

target=""
timeout=30
quiet=0
while [ $# -gt 0 ]; do
    case "$1" in
        *:*) target="$1"; shift ;;
        -t) [ $# -ge 2 ] || usage; timeout="$2"; shift 2 ;;
        -q) quiet=1; shift ;;
        --) shift; break ;;
        -h|--help) usage ;;
        *) echo "wait-for-it: unknown argument: $1" >&2; usage ;;
    esac
done
[ -n "$target" ] || usage
host="${target%:*}"
port="${target##*:}"
case "$timeout" in ''|*[!0-9]*) echo "wait-for-it: timeout must be whole seconds" >&2; exit 2 ;; esac

say() { [ "$quiet" -eq 1 ] || echo "wait-for-it: $*" >&2; }

port_open() {
    if command -v nc >/dev/null 2>&1; then
        nc -z -w 2 "$host" "$port" >/dev/null 2>&1
    else
        python3 - "$host" "$port" <<'PY'
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
except OSError:
    sys.exit(1)
PY
    fi
}

start=$(date +%s)
say "waiting up to ${timeout}s for $host:$port"
until port_open; do
    elapsed=$(( $(date +%s) - start ))
    if [ "$timeout" -gt 0 ] && [ "$elapsed" -ge "$timeout" ]; then
        echo "wait-for-it: $host:$port did not open within ${timeout}s" >&2
        exit 1
    fi
    sleep 1
done
say "$host:$port is open after $(( $(date +%s) - start ))s"

if [ $# -gt 0 ]; then
    exec "$@"
fi
