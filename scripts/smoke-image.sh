#!/bin/sh
# Start a production image as it runs in production and check that it serves: the last
# check before the image is pushed (CI runs it on each platform's image, arm64 under QEMU).
#
# Usage: smoke-image.sh IMAGE [PLATFORM]        e.g. smoke-image.sh shipshape:smoke linux/arm64
#
# Runs IMAGE's default command (gunicorn, `prod` mode, production settings) on an embedded
# SQLite database with throwaway secrets, waits until the image's own HEALTHCHECK command
# passes, prints the /health report (version, commit) and removes the container. Exits 1
# when it does not get healthy within SMOKE_TIMEOUT seconds (default 300: emulation is slow)
# and shows the end of its log. Environment: DOCKER=docker.
set -o errexit -o nounset

if [ $# -lt 1 ]; then
    sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0" >&2
    exit 64
fi
image=$1
platform=${2:-}
docker=${DOCKER:-docker}
timeout=${SMOKE_TIMEOUT:-300}

secret() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }

container=$("$docker" run --detach ${platform:+--platform "$platform"} --label shipshape.smoke=true \
    --env ENVIRONMENT=production \
    --env SECRET_KEY="$(secret)" --env JWT_SECRET_KEY="$(secret)" \
    --env DATABASE_URL=sqlite+aiosqlite:////app/data/smoke.db \
    --env RUN_MIGRATIONS=true --env WEB_CONCURRENCY=1 \
    "$image")
trap '"$docker" rm --force "$container" >/dev/null 2>&1 || true' EXIT

echo "smoke test of $image${platform:+ ($platform)}: waiting up to ${timeout}s for it to serve"
deadline=$(( $(date +%s) + timeout ))
until "$docker" exec "$container" python /app/scripts/healthcheck.py >/dev/null 2>&1; do
    running=$("$docker" inspect --format '{{.State.Running}}' "$container")
    if [ "$running" != true ] || [ "$(date +%s)" -ge "$deadline" ]; then
        echo "$image did not serve (running: $running); the end of its log:" >&2
        "$docker" logs --tail 30 "$container" >&2 2>&1 || true
        exit 1
    fi
    sleep 2  # polling interval, bounded by the deadline
done
"$docker" exec "$container" python -c \
    "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/health').read().decode())"
echo "$image serves${platform:+ on $platform}"
