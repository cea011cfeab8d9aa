"""Container HEALTHCHECK, stdlib only (no curl in the image): healthy once ready, then alive.

Until the container has been ready once, GET /ready: a new container turns healthy only when
it can serve (database reachable, schema at head, Redis), so a rolling update (Swarm, `make
rollout`, `docker compose up --wait`) waits for readiness, and rolls back an image that never
gets there. From then on GET /live, which does no I/O: a database outage never gets a
process restarted that will serve again by itself; readiness is then /ready's job (nginx,
probes). The first readiness is remembered in a file on the container's /tmp (a tmpfs: a
restarted container starts over).

Exit 0 when the process answers 200, 1 otherwise.
"""

import os
import sys
import tempfile
import urllib.request

BASE = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}"
READY_ONCE = os.path.join(tempfile.gettempdir(), "shipshape-ready-once")
LIVE = "/live"
READY = "/ready"


def answers(path: str) -> bool:
    try:
        with urllib.request.urlopen(BASE + path, timeout=4) as response:  # noqa: S310 - loopback
            return response.status == 200
    except Exception as exc:  # any failure is "unhealthy"; say why in `docker inspect`
        print(f"healthcheck: {path}: {exc}", file=sys.stderr)
        return False


if os.path.exists(READY_ONCE):
    sys.exit(0 if answers(LIVE) else 1)
if not answers(READY):
    sys.exit(1)
try:
    with open(READY_ONCE, "w"):
        pass
except OSError as exc:  # no writable /tmp: readiness is checked every time instead
    print(f"healthcheck: {READY_ONCE}: {exc}", file=sys.stderr)
sys.exit(0)
