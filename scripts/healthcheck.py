"""Container HEALTHCHECK: GET /live on this container, stdlib only (no curl in the image).

Exit 0 when the process answers 200, 1 otherwise. /live does no I/O, so a slow database
never gets a healthy process restarted; readiness is /ready's job.
"""

import os
import sys
import urllib.request

url = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/live"
try:
    with urllib.request.urlopen(url, timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as exc:  # any failure is "unhealthy"; say why in `docker inspect`
    print(f"healthcheck: {url}: {exc}", file=sys.stderr)
    sys.exit(1)
