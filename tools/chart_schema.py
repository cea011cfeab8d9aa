"""The Settings-derived parts of the Helm chart's values.schema.json.

    python -m tools.chart_schema            # print the schema
    python -m tools.chart_schema --write    # rewrite the chart's values.schema.json (`make docs`)

`config` lists every plain setting of the service with its type and bounds (from the
Settings class), so a wrong value is refused before anything renders; `secrets.files` lists
the secrets, which reach the pods only as files; and `extraEnv` refuses the settings' names.
A test fails when the file is out of step.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from app.core.config import Settings, is_secret

SCHEMA = Path("deploy/helm/shipshape/values.schema.json")

# Set by the chart from its own values (the mounts, the Service's port, the migrations Job),
# so `config` refuses them: one place for each.
CHART_SETTINGS = {
    "BASE_URL": "baseUrl (default: https://<ingress.host>)",
    "DB_HOST": "database.host",
    "DB_PORT": "database.port",
    "DB_NAME": "database.name",
    "DB_USER": "database.user",
    "REDIS_HOST": "redis.host",
    "REDIS_PORT": "redis.port",
    "DB_SSLMODE": "database.sslmode",
    "DB_SSL_ROOT_CERT": "database.caSecret (mounted at /etc/shipshape/tls)",
    "REDIS_TLS": "redis.tls",
    "REDIS_CA_FILE": "redis.caSecret (mounted at /etc/shipshape/tls)",
    "PORT": "app.port",
    "FORWARDED_ALLOW_IPS": "trustedProxies (auto: * while the NetworkPolicies admit only the "
    "ingress controller)",
    "UPLOADS_DIR": "the files volume, mounted at /app/uploads",
    "STORAGE_DIR": "the files volume, mounted at /app/storage",
    "RUN_MIGRATIONS": "migrations.enabled (the Job migrates, so the app does not)",
}
# Stamped into the image by its build; a value here would hide the image's own.
BUILD_STAMPED = {"BUILD_VERSION", "GIT_COMMIT"}


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inline(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
        return {k: _inline(v, defs) for k, v in schema.items() if k not in ("title", "default")}
    if isinstance(schema, list):
        return [_inline(v, defs) for v in schema]
    return schema


def config_properties() -> dict[str, Any]:
    model = Settings.model_json_schema()
    defs = model.get("$defs", {})
    properties: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        var = name.upper()
        if is_secret(field) or var in CHART_SETTINGS or var in BUILD_STAMPED:
            continue
        properties[var] = _inline(model["properties"][name], defs)
    return properties


def secret_files() -> list[str]:
    return [name for name, field in Settings.model_fields.items() if is_secret(field)]


def setting_variables() -> list[str]:
    """Every variable the service reads: each setting, and each one's <NAME>_FILE."""
    names = [name.upper() for name in Settings.model_fields]
    return sorted([*names, *(f"{name}_FILE" for name in names)])


def render(current: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(json.dumps(current))
    schema["properties"]["config"]["properties"] = config_properties()
    schema["properties"]["secrets"]["properties"]["files"]["items"]["enum"] = secret_files()
    # A setting given as extraEnv would pass around `config`'s checks, and a secret would
    # become an environment variable: extraEnv takes other names only.
    name = schema["definitions"]["envVar"]["items"]["properties"]["name"]
    name["not"] = {"enum": setting_variables()}
    return schema


def dumps(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> None:
    rendered = dumps(render(json.loads(SCHEMA.read_text(encoding="utf-8"))))
    if "--write" in argv:
        SCHEMA.write_text(rendered, encoding="utf-8")
        print(f"wrote {SCHEMA}")
    else:
        sys.stdout.write(rendered)


if __name__ == "__main__":
    main(sys.argv[1:])
