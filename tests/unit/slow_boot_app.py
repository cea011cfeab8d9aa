"""The ASGI app of test_graceful_shutdown.py, loaded slowly by every gunicorn worker but the
first: BOOT_MARKER names a file the first worker creates; the others write their pid to
BOOT_MARKER.booting and take BOOT_SECONDS to load, so a signal can reach one while it
boots."""

import os
import time

from tests.unit.test_graceful_shutdown import created

try:
    os.close(os.open(os.environ["BOOT_MARKER"], os.O_CREAT | os.O_EXCL))
except FileExistsError:
    with open(os.environ["BOOT_MARKER"] + ".booting", "w") as booting:
        booting.write(str(os.getpid()))
    time.sleep(float(os.environ["BOOT_SECONDS"]))  # the slow boot under test

app = created
