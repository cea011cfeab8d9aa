"""Fuzz tier: schemathesis against the running service's own OpenAPI document.

Every operation gets generated requests — valid ones and deliberately invalid ones
(schemathesis' positive and negative modes) — as a normal user and anonymously, with a
fixed seed and example count. Any 5xx, or any answer whose status, content type, headers
or body the document does not describe, fails the test; all failures are listed with a
curl command that repeats them. On the embedded SQLite default here; tests/integration
runs the same on Postgres.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    allow_header_conformance,
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from schemathesis.core.result import Ok

from tests.server import Server, serve

# A multipart upload cannot carry a null file (schemathesis sends the text "null", a valid
# one-line file): the import is left out of the check that invalid data is refused.
NULL_FILE_UPLOADS = frozenset({"POST /api/v1/items/import"})


def _beyond_the_document(response: Any, case: Any) -> bool:
    """A refusal the document cannot state: a cursor (base64url, as documented) that no
    page of this listing issued (400), or a callback URL (an http(s) URL, as documented)
    whose host WEBHOOK_ALLOWED_HOSTS does not allow (422 on that field alone)."""
    if response.status_code == 400 and (case.query or {}).get("cursor"):
        return True
    if response.status_code == 422:
        try:
            errors = response.json()["detail"]
        except (ValueError, KeyError, TypeError):
            return False
        return bool(errors) and all(
            isinstance(e, dict) and e.get("loc") == ["body", "callback_url"] for e in errors
        )
    return False


def valid_data_is_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis' positive_data_acceptance, but for refusals beyond the document."""
    if _beyond_the_document(response, case):
        return None
    return positive_data_acceptance(ctx, response, case)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    # The document is the contract both ways: what it allows is accepted, what it refuses
    # is refused (a string "yes" for a boolean, a title ending in a tab, an empty URL).
    negative_data_rejection,
    valid_data_is_accepted,
    unsupported_method,
    allow_header_conformance,
]
EXAMPLES = 30  # per operation, mode and identity
MAX_REPORTED = 20


def fuzz_settings(**extra: str) -> dict[str, str]:
    """The service under attack, configured so that no webhook leaves this machine: callback
    URLs are refused unless they point at 127.0.0.1, where nothing answers."""
    return {"WEBHOOK_ALLOWED_HOSTS": "127.0.0.1", "WEBHOOK_ALLOW_PRIVATE_TARGETS": "true", **extra}


def fuzz(server: Server, headers: dict[str, str]) -> Counter[str]:
    """Every operation of the server's schema, both modes; the cases sent per operation.
    Fails with every failing case (and how to repeat it) when there is any."""
    schema = schemathesis.openapi.from_url(f"{server.base_url}/api/v1/openapi.json")
    sent: Counter[str] = Counter()
    failures: list[str] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # every operation of our schema loads
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _attack(operation, mode, headers, sent, failures)
            except Unsatisfiable:  # nothing to make invalid (an operation without input)
                continue
    assert not failures, f"{len(failures)} failing cases:\n" + "\n".join(failures[:MAX_REPORTED])
    return sent


def _attack(
    operation: schemathesis.APIOperation[Any, Any, Any, Any],
    mode: GenerationMode,
    headers: dict[str, str],
    sent: Counter[str],
    failures: list[str],
) -> None:
    checks = CHECKS
    if operation.label in NULL_FILE_UPLOADS:
        checks = [check for check in CHECKS if check is not negative_data_rejection]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,  # the same requests on every run
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def attack(case: schemathesis.Case[Any]) -> None:
        sent[operation.label] += 1
        try:
            case.call_and_validate(headers=headers, checks=checks, timeout=30)
        except (Exception, BaseExceptionGroup) as failure:  # collect it, keep going
            curl = case.as_curl_command(headers=headers)
            failures.append(f"{operation.label} ({mode.value}): {failure}\n  {curl}")

    attack()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(tmp_path_factory.mktemp("fuzz"), **fuzz_settings()) as running:
        yield running


def report(identity: str, sent: Counter[str]) -> None:
    print(f"\nfuzz ({identity}): {sum(sent.values())} cases, 0 failures")
    for label, count in sorted(sent.items()):
        print(f"  {count:4d}  {label}")


def test_no_failures_as_a_user(server: Server) -> None:
    user = server.create_user("fuzzer", "fuzzer-password-1")
    report("user", fuzz(server, user))


def test_no_failures_as_a_superuser(server: Server) -> None:
    """Superusers reach what users cannot (creating and changing users, operating jobs)."""
    report("superuser", fuzz(server, server.login("admin", server.admin_password)))


def test_no_failures_anonymously(server: Server) -> None:
    report("anonymous", fuzz(server, {}))
