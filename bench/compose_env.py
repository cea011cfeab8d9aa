"""A production stack on this machine: its env file and the environment compose runs in.

Shared by the benchmarks (`up --wait` time) and the stack tests, which bring up the same
production compose files on free 127.0.0.1 ports.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prod_env_file(path: Path, overrides: dict[str, str]) -> dict[str, str]:
    """.env.prod.example with a fresh random value for every CHANGE_ME_PROD_* secret and
    `overrides` applied (each must be a variable of the example); written to `path`.
    Returns every variable of the file."""
    text = (ROOT / ".env.prod.example").read_text()
    text = re.sub(r"=CHANGE_ME_PROD_[A-Z_]+", lambda _: "=" + secrets.token_urlsafe(32), text)
    for key, value in overrides.items():
        text, count = re.subn(rf"^{key}=.*$", f"{key}={value}", text, flags=re.M)
        if count != 1:
            raise ValueError(f"{key} is not a variable of .env.prod.example")
    path.write_text(text)
    return dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", text, re.M))


def compose_environment(env_file: Path) -> dict[str, str]:
    """This process's environment minus every variable the env files document: the
    shell's values would win over --env-file. ENV_FILE points the services' env_file at it."""
    documented: set[str] = set()
    for example in ROOT.glob(".env.*.example"):
        documented |= set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example.read_text(), re.M))
    env = {k: v for k, v in os.environ.items() if k not in documented}
    env["ENV_FILE"] = str(env_file)
    return env
