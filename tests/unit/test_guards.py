"""The code that guards users, tested directly (and by mutation: `make mutate`): text
rules, the owner check, egress address checks, tokens and passwords, CSV limits, the login
guard. Each test exercises the function itself, without an app."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import ipaddress
import re
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpcore
import jwt
import pytest
from pydantic import TypeAdapter, ValidationError

from app.core import egress, egress_backend, resources, security, text
from app.core.config import Settings, load_settings
from app.services import access, csvfiles, login_guard
from app.services.errors import Forbidden, NotFound

# --- text ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("char", "single", "multi"),
    [
        ("\x00", False, False), ("\x08", False, False), ("\t", False, True),
        ("\n", False, True), ("\x0b", False, False), ("\x0c", False, False),
        ("\r", False, True), ("\x0e", False, False), ("\x1f", False, False),
        (" ", True, True), ("~", True, True), ("\x7f", False, False), ("\x9f", False, False),
        ("\xa0", True, True), (chr(0xD800), False, False), (chr(0xDFFF), False, False),
        ("\ue000", True, True), ("é", True, True),
    ],
)  # fmt: skip
def test_each_character_class_is_clean_or_not(char: str, single: bool, multi: bool) -> None:
    value = f"a{char}b"
    assert text.is_clean(value) is single
    assert (
        text.is_clean(value, multi_line=multi) is multi
        or text.is_clean(value, multi_line=True) is multi
    )
    assert text.is_clean(value, multi_line=True) is multi
    # The API document's patterns say the same (surrogates cannot be written in JSON).
    if not 0xD800 <= ord(char) <= 0xDFFF:
        assert (re.fullmatch(text.SINGLE_LINE_PATTERN, value) is not None) is single
        assert (re.fullmatch(text.MULTI_LINE_PATTERN, value) is not None) is multi


def test_single_and_multi_line_refuse_with_their_messages() -> None:
    assert text.single_line("plain") == "plain"
    assert text.multi_line("two\nlines\tand tab") == "two\nlines\tand tab"
    with pytest.raises(
        ValueError, match=r"^must not contain control characters or invalid Unicode$"
    ):
        text.single_line("a\nb")
    with pytest.raises(
        ValueError,
        match=r"^must not contain control characters \(other than tab and line breaks\) "
        r"or invalid Unicode$",
    ):
        text.multi_line("a\x00b")
    assert text._controls_first(42) == 42  # not text: for the field's own type check
    assert text._controls_first("ok") == "ok"
    with pytest.raises(ValueError, match="control characters"):
        text._controls_first("\tpadded")


EMAIL = TypeAdapter(text.Email)


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("Ann@Example.COM", "Ann@example.com"),
        ("  a.b+c@mail.example.org ", "a.b+c@mail.example.org"),
        ("x@a-b.io", "x@a-b.io"),
        (f"{'l' * 64}@example.com", f"{'l' * 64}@example.com"),
    ],
)
def test_valid_addresses_keep_the_local_part_and_lower_the_domain(given: str, stored: str) -> None:
    assert EMAIL.validate_python(given) == stored


@pytest.mark.parametrize(
    "given",
    [
        "plain", "a@b", "a@-b.com", "a@b-.com", "a@.com", "a@b..com", "a b@c.com",
        f"{'l' * 65}@example.com", "a@b.c_m", "a@@b.com", "\ta@b.com", "a@b.com\n",
        "a\x00@b.com", "@b.com", f"a@{'d' * 250}.com",
    ],
)  # fmt: skip
def test_invalid_addresses_are_refused(given: str) -> None:
    with pytest.raises(ValidationError):
        EMAIL.validate_python(given)
    assert not text._EMAIL.match(given) or not text.is_clean(given) or len(given) > 254


@pytest.mark.parametrize(
    ("query", "valid"),
    [
        ("", True), ("   ", True), ("abc", True), ("a b", True), (" abc ", True),
        ("ab", False), (" ab ", False), ("a", False), ("a\x00c", False), ("ab\tc", False),
    ],
)  # fmt: skip
def test_the_search_pattern_takes_blank_or_three_characters(query: str, valid: bool) -> None:
    assert (re.fullmatch(text.SEARCH_PATTERN, query) is not None) is valid


# --- access -------------------------------------------------------------------------

OWNER = uuid.UUID(int=1)
OTHER = uuid.UUID(int=2)


def principal(user: uuid.UUID, superuser: bool = False) -> access.Principal:
    return access.Principal(user, is_active=True, is_superuser=superuser, credential_version=0)


def test_only_the_owner_or_a_superuser_passes_the_owner_check() -> None:
    access.check_owner(principal(OWNER), OWNER, "item")
    access.check_owner(principal(OTHER, superuser=True), OWNER, "item")
    with pytest.raises(Forbidden) as refused:
        access.check_owner(principal(OTHER), OWNER, "item")
    assert str(refused.value) == "not enough permissions for this item"


class _Session:
    def __init__(self, found: Any) -> None:
        self.found = found
        self.asked: tuple[Any, ...] = ()

    async def get(self, model: Any, object_id: Any) -> Any:
        self.asked = (model, object_id)
        return self.found


@dataclass
class _Note:
    owner_id: uuid.UUID


def test_get_owned_is_404_then_403_then_the_object() -> None:
    thing = _Note(owner_id=OWNER)
    session = _Session(None)
    with pytest.raises(NotFound) as missing:
        asyncio.run(access.get_owned(session, principal(OWNER), _Note, OTHER, "note"))  # type: ignore[arg-type]
    assert str(missing.value) == "note not found"
    assert session.asked == (_Note, OTHER)
    with pytest.raises(Forbidden, match=r"^not enough permissions for this note$"):
        asyncio.run(access.get_owned(_Session(thing), principal(OTHER), _Note, OWNER, "note"))  # type: ignore[arg-type]
    found = asyncio.run(access.get_owned(_Session(thing), principal(OWNER), _Note, OWNER, "note"))  # type: ignore[arg-type]
    assert found is thing


# --- egress -------------------------------------------------------------------------


@pytest.mark.parametrize("block", [*egress.IPV4_NOT_GLOBAL, *egress.IPV6_NOT_GLOBAL])
def test_every_special_purpose_block_is_refused_at_both_ends(block: str) -> None:
    network = ipaddress.ip_network(block)
    assert not egress.is_public(network.network_address)
    assert not egress.is_public(network.broadcast_address)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True), ("1.1.1.1", True), ("9.255.255.255", True), ("11.0.0.0", True),
        ("100.63.255.255", True), ("100.128.0.0", True), ("172.15.255.255", True),
        ("172.32.0.0", True), ("192.167.255.255", True), ("192.169.0.0", True),
        ("198.17.255.255", True), ("198.20.0.0", True), ("223.255.255.255", True),
        ("2606:4700:4700::1111", True), ("2001:4860:4860::8888", True),
        ("2001:200::1", True), ("64:ff9b::808:808", True), ("64:ff9b::7f00:1", False),
        ("64:ff9b::a00:1", False), ("4000::1", False), ("1fff:ffff::1", False),
        ("fec0::1", False), ("::8.8.8.8", False), ("::ffff:8.8.8.8", False),
    ],
)  # fmt: skip
def test_public_means_globally_reachable_unicast(address: str, public: bool) -> None:
    assert egress.is_public(ipaddress.ip_address(address)) is public


def test_checked_addresses_refuse_any_private_answer_and_keep_the_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = {
        "mixed.example": ["8.8.8.8", "10.0.0.1"],
        "twice.example": ["8.8.4.4", "8.8.8.8", "8.8.4.4"],
    }

    def resolve(host: str, port: int) -> list[egress.IPAddress]:
        assert port == 443
        return [ipaddress.ip_address(a) for a in answers[host]]

    monkeypatch.setattr(egress, "resolve", resolve)
    with pytest.raises(egress.RefusedAddress, match=r"^mixed\.example is not a public address$"):
        egress.checked_addresses("mixed.example", 443, allow_private=False)
    assert egress.checked_addresses("mixed.example", 443, allow_private=True) == [
        ipaddress.ip_address("8.8.8.8"), ipaddress.ip_address("10.0.0.1")
    ]  # fmt: skip
    assert egress.checked_addresses("twice.example", 443, allow_private=False) == [
        ipaddress.ip_address("8.8.4.4"), ipaddress.ip_address("8.8.8.8")
    ]  # fmt: skip
    # An address literal is checked as it is, without a lookup.
    with pytest.raises(egress.RefusedAddress, match=r"^\[::1\] is not a public address$"):
        egress.checked_addresses("[::1]", 443, allow_private=False)
    assert egress.checked_addresses("[::1]", 443, allow_private=True) == [
        ipaddress.ip_address("::1")
    ]


def test_resolve_returns_every_address_of_the_name() -> None:
    assert egress.resolve("127.0.0.1", 80) == [ipaddress.ip_address("127.0.0.1")]
    assert ipaddress.ip_address("127.0.0.1") in egress.resolve("localhost", 80) or (
        ipaddress.ip_address("::1") in egress.resolve("localhost", 80)
    )


class _Stream(httpcore.NetworkStream):
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self.calls.append(("read", (max_bytes, timeout)))
        return b"data"

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.calls.append(("write", (buffer, timeout)))

    def close(self) -> None:
        self.calls.append(("close", None))

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:  # fmt: skip
        self.calls.append(("start_tls", (ssl_context, server_hostname, timeout)))
        return _Stream()

    def get_extra_info(self, info: str) -> Any:
        return f"info:{info}"


def test_a_deadline_stream_gives_each_call_the_time_left_at_most(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(time, "monotonic", lambda: 1000.0)  # a busy machine's pauses do not count
    inner = _Stream()
    stream = egress_backend._DeadlineStream(inner, 1100.0)
    assert stream.read(10, 5.0) == b"data"
    stream.write(b"x", None)
    ((_, (size, short)), (_, (_, left))) = inner.calls
    assert (size, short) == (10, 5.0)
    assert left == 100  # no timeout given: the time left until the deadline
    tls = stream.start_tls("context", "example.com", 500.0)
    assert isinstance(tls, egress_backend._DeadlineStream)
    assert tls._deadline == stream._deadline
    _, (context, name, timeout) = inner.calls[-1]
    assert (context, name) == ("context", "example.com")
    assert timeout == 100
    assert stream.get_extra_info("peer") == "info:peer"
    stream.close()
    assert inner.calls[-1] == ("close", None)
    late = egress_backend._DeadlineStream(_Stream(), 999.999)
    for call in (lambda: late.read(1), lambda: late.write(b"x"), lambda: late.start_tls(None)):
        with pytest.raises(httpcore.ReadTimeout, match=r"^the attempt's time is up$"):
            call()


def test_the_backend_tries_each_checked_address_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "monotonic", lambda: 1000.0)
    tried: list[str] = []
    refusing = {
        "192.0.2.10": httpcore.ConnectError("refused"),
        "192.0.2.11": httpcore.ConnectTimeout("slow"),
    }

    def connect(self: Any, host: str, port: int, *args: Any) -> httpcore.NetworkStream:
        tried.append(host)
        if host in refusing:
            raise refusing[host]
        return _Stream()

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", connect)
    addresses = {"three.example": ["192.0.2.10", "192.0.2.11", "192.0.2.12"],
                 "dead.example": ["192.0.2.10", "192.0.2.11"], "none.example": []}  # fmt: skip
    monkeypatch.setattr(
        egress, "resolve", lambda host, port: [ipaddress.ip_address(a) for a in addresses[host]]
    )
    backend = egress_backend.EgressBackend(allow_private=True, total_timeout=30)
    assert backend.deadline == 1030.0
    stream = backend.connect_tcp("three.example", 443)
    assert isinstance(stream, egress_backend._DeadlineStream)
    assert stream._deadline == backend.deadline
    assert tried == ["192.0.2.10", "192.0.2.11", "192.0.2.12"]
    with pytest.raises(httpcore.ConnectTimeout, match=r"^slow$"):  # the last error
        backend.connect_tcp("dead.example", 443)
    with pytest.raises(httpcore.ConnectError, match=r"^none\.example has no address$"):
        backend.connect_tcp("none.example", 443)
    strict = egress_backend.EgressBackend(allow_private=False, total_timeout=30)
    tried.clear()
    with pytest.raises(egress.RefusedAddress):
        strict.connect_tcp("three.example", 443)
    assert tried == []  # refused before any connection


# --- tokens and passwords -----------------------------------------------------------


def test_tokens_are_random_stored_as_digests_and_bounded() -> None:
    tokens = {security.new_token() for _ in range(50)}
    assert len(tokens) == 50
    assert {len(t) for t in tokens} == {43}  # 32 random bytes, base64url
    assert security.token_digest("abc") == hashlib.sha256(b"abc").hexdigest()
    assert security.plausible_token("x" * security.MAX_TOKEN_LENGTH)
    assert security.MAX_TOKEN_LENGTH == 64
    for implausible in ("", "x" * 65, "tökén"):
        assert not security.plausible_token(implausible), implausible


@pytest.fixture
def fast_hashing() -> Any:
    before = security._hashing
    settings = load_settings(environment="test", password_hash_memory_kib=8,
                             password_hash_time_cost=1, password_hash_concurrency=1)  # fmt: skip
    security.configure_password_hashing(settings)
    yield security._hashing
    security._hashing = before
    security._gates.clear()


def test_passwords_verify_and_weak_parameters_are_rehashed(fast_hashing: Any) -> None:
    assert fast_hashing.params == (8, 1, 1)
    hashed = asyncio.run(security.hash_password("correct horse"))
    assert hashed.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert asyncio.run(security.verify_password("correct horse", hashed)) == (True, None)
    assert asyncio.run(security.verify_password("wrong", hashed)) == (False, None)
    assert asyncio.run(security.verify_password("x", None)) == (False, None)  # no such user
    assert asyncio.run(security.verify_password("x", "not-a-hash")) == (False, None)
    older = security._hashing_for(16, 1, 1).hasher.hash("correct horse")
    matches, updated = asyncio.run(security.verify_password("correct horse", older))
    assert matches
    assert updated is not None
    assert "m=8,t=1" in updated


def test_the_hashing_slots_are_bounded_and_a_wait_ends_busy(fast_hashing: Any) -> None:
    security._hashing = security._Hashing(
        fast_hashing.params, fast_hashing.hasher, fast_hashing.dummy_hash, wait_seconds=0.05
    )

    async def contend() -> None:
        async with security._hashing_slot():
            with pytest.raises(security.HashingBusy):
                async with security._hashing_slot():
                    pass
        async with security._hashing_slot():  # released: free again
            pass

    asyncio.run(contend())


def test_configuring_the_same_parameters_keeps_the_hasher(fast_hashing: Any) -> None:
    settings = load_settings(environment="test", password_hash_memory_kib=8,
                             password_hash_time_cost=1, password_hash_concurrency=1)  # fmt: skip
    security.configure_password_hashing(settings)
    assert security._hashing is fast_hashing


SECRET = "s" * 40


def settings_for_tokens(minutes: int = 15) -> Settings:
    return load_settings(environment="test", jwt_secret_key=SECRET,
                         access_token_expire_minutes=minutes)  # fmt: skip


def forged(exp_in: int = 600, **claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": str(OWNER), "iat": now, "exp": now + exp_in, "type": "access", **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, SECRET, "HS256")


def test_an_access_token_carries_its_user_and_credential_version() -> None:
    settings = settings_for_tokens()
    token = security.create_access_token(settings, OWNER, 7)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert (claims["type"], claims["cv"], claims["exp"] - claims["iat"]) == ("access", 7, 900)
    assert security.decode_access_token(settings, token) == security.TokenClaims(OWNER, 7)
    assert security.decode_access_token(settings, forged()) == security.TokenClaims(OWNER, 0)


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"type": "refresh"}, "not an access token"),
        ({"type": None}, "not an access token"),
        ({"exp_in": 15 * 60 + 31}, "lifetime longer"),
        ({"cv": "1"}, "credential version is not an integer"),
        ({"cv": True}, "credential version is not an integer"),
        ({"sub": "not-a-uuid"}, "badly formed"),
        ({"sub": None}, "sub"),
        ({"iat": None}, "iat"),
        ({"exp_in": -31}, "expired"),
    ],
)
def test_tokens_that_are_not_ours_are_refused(claims: dict[str, Any], reason: str) -> None:
    with pytest.raises(security.InvalidToken, match=reason):
        security.decode_access_token(settings_for_tokens(), forged(**claims))


def test_a_token_within_the_leeway_is_accepted_and_an_expired_one_never() -> None:
    settings = settings_for_tokens()
    now = int(time.time())
    # Issued 20 s in the future (clock skew) with the full lifetime: within the leeway.
    early = forged(iat=now + 20, exp=now + 20 + 900)
    assert security.decode_access_token(settings, early).user_id == OWNER
    assert security.LEEWAY_SECONDS == 30
    stale = forged(iat=now - 900, exp=now - 5)  # within jwt's leeway, but expired
    with pytest.raises(security.InvalidToken, match=r"^Signature has expired$"):
        security.decode_access_token(settings, stale)
    other_key = jwt.encode({"sub": str(OWNER), "iat": now, "exp": now + 60, "type": "access"},
                           "k" * 40, "HS256")  # fmt: skip
    with pytest.raises(security.InvalidToken):
        security.decode_access_token(settings, other_key)


def test_memory_limit_reads_cgroup_v2_then_v1(monkeypatch: pytest.MonkeyPatch) -> None:
    files: dict[str, str] = {}

    def read_text(self: Path, *args: Any, **kwargs: Any) -> str:
        if str(self) in files:
            return files[str(self)]
        raise FileNotFoundError(str(self))

    monkeypatch.setattr(Path, "read_text", read_text)
    assert resources.memory_limit_bytes() is None
    files["/sys/fs/cgroup/memory/memory.limit_in_bytes"] = "9223372036854771712\n"
    assert resources.memory_limit_bytes() is None  # v1's "no limit"
    files["/sys/fs/cgroup/memory/memory.limit_in_bytes"] = "536870912\n"
    assert resources.memory_limit_bytes() == 536870912
    files["/sys/fs/cgroup/memory.max"] = "max\n"
    assert resources.memory_limit_bytes() is None  # v2 first: no limit
    files["/sys/fs/cgroup/memory.max"] = "268435456\n"
    assert resources.memory_limit_bytes() == 268435456
    files["/sys/fs/cgroup/memory.max"] = str(2**60)
    assert resources.memory_limit_bytes() is None


# --- login guard --------------------------------------------------------------------


def guard_settings(**values: Any) -> Settings:
    return load_settings(**{"environment": "test", "secret_key": "k" * 40, **values})


def test_a_device_token_names_its_user_and_nothing_forged_passes() -> None:
    settings = guard_settings()
    token = login_guard.issue_device_token(settings, OWNER)
    user_hex, nonce, signature = token.split(".")
    assert user_hex == OWNER.hex
    assert len(nonce) == 16
    assert len(signature) == 32
    assert login_guard.device_user(settings, token) == (OWNER, nonce)
    assert login_guard.issue_device_token(settings, OWNER) != token  # a new nonce each time
    other_key = guard_settings(secret_key="o" * 40)
    forged_user = f"{OTHER.hex}.{nonce}.{signature}"
    bad = [None, "", token + "x", token[:-1], forged_user, f"{user_hex}.{signature}",
           "é" + token[1:], "x" * 129, f"zz.{nonce}.{login_guard._device_signature('k' * 40, 'zz.' + nonce)}"]  # fmt: skip
    for candidate in bad:
        assert login_guard.device_user(settings, candidate) is None, candidate
    assert login_guard.device_user(other_key, token) is None
    long_nonce = "n" * (128 - 32 - 2 - 32)
    body = f"{OWNER.hex}.{long_nonce}"
    exact = f"{body}.{login_guard._device_signature(settings.secret_key, body)}"
    assert len(exact) == login_guard.DEVICE_TOKEN_MAX_LENGTH == 128
    assert login_guard.device_user(settings, exact) == (OWNER, long_nonce)


def test_failures_are_counted_per_account_and_address_then_per_address() -> None:
    settings = guard_settings(login_failures_per_account="3/minute",
                              login_failures_per_client="5/minute")  # fmt: skip
    guard = login_guard.LoginGuard(settings)

    async def scenario() -> None:
        for _ in range(3):
            assert await guard.retry_after("Ann", "10.0.0.1") is None
            await guard.failed("Ann", "10.0.0.1")
        wait = await guard.retry_after("ann", "10.0.0.1")  # the login's case does not matter
        assert wait is not None
        assert 1 <= wait <= 60
        assert await guard.retry_after("ann", "10.0.0.2") is None  # the real user elsewhere
        # A success there clears only that address's counter for the account.
        await guard.succeeded("ANN", "10.0.0.2")
        assert await guard.retry_after("ann", "10.0.0.1") is not None
        await guard.succeeded("ANN", "10.0.0.1")
        assert await guard.retry_after("ann", "10.0.0.1") is None
        # Spraying: five failures over five accounts from one address stop it for all.
        for name in ("b", "c", "d", "e"):
            await guard.failed(name, "10.0.0.9")
        assert await guard.retry_after("f", "10.0.0.9") is None
        await guard.failed("g", "10.0.0.9")
        assert await guard.retry_after("f", "10.0.0.9") is not None
        assert await guard.retry_after("f", "10.0.0.8") is None

    asyncio.run(scenario())


def test_a_known_device_counts_on_its_own_instead_of_the_address() -> None:
    settings = guard_settings(login_failures_per_account="2/minute",
                              login_failures_per_client="2/minute")  # fmt: skip
    guard = login_guard.LoginGuard(settings)

    async def scenario() -> None:
        await guard.failed("x", "10.0.0.1")
        await guard.failed("y", "10.0.0.1")
        assert await guard.retry_after("ann", "10.0.0.1") is not None  # the address is spent
        assert await guard.retry_after("ann", "10.0.0.1", device="nonce") is None
        await guard.failed("ann", "10.0.0.5", device="nonce")
        await guard.failed("bob", "10.0.0.6", device="nonce")
        assert await guard.retry_after("carl", "10.0.0.7", device="nonce") is not None
        assert await guard.retry_after("carl", "10.0.0.7", device="other") is None

    asyncio.run(scenario())


class _Broken:
    async def test(self, *args: Any) -> bool:
        raise ConnectionError("redis down")

    hit = clear = get_window_stats = test


def test_a_failing_storage_throttles_nobody(caplog: pytest.LogCaptureFixture) -> None:
    guard = login_guard.LoginGuard(guard_settings())
    guard.limiter = _Broken()  # type: ignore[assignment]
    limit = login_guard.RequestLimit(guard, "1/hour", "reset")

    async def scenario() -> None:
        assert await guard.retry_after("ann", "10.0.0.1") is None
        await guard.failed("ann", "10.0.0.1")
        await guard.succeeded("ann", "10.0.0.1")
        assert await limit.take("a@example.com") is True
        assert await limit.take("a@example.com") is True

    asyncio.run(scenario())
    messages = [r.getMessage() for r in caplog.records if r.name == "app.security"]
    assert messages.count("login throttling unavailable") == 3
    assert "request limit unavailable" in messages


def test_a_request_limit_spends_every_window_and_then_refuses() -> None:
    guard = login_guard.LoginGuard(guard_settings())
    limit = login_guard.RequestLimit(guard, "2/hour;3/day", "reset")

    async def scenario() -> list[bool]:
        return [await limit.take("a") for _ in range(3)] + [await limit.take("b")]

    assert asyncio.run(scenario()) == [True, True, False, True]
    assert limit.name == "reset"
    assert [str(i) for i in limit.items] == [
        "2 per 1 hour",
        "3 per 1 day",
    ]


def test_the_guard_stores_in_redis_when_one_is_configured() -> None:
    memory = login_guard._storage(guard_settings())
    assert type(memory).__name__ == "MemoryStorage"
    redis = login_guard._storage(guard_settings(redis_url="redis://:pw@127.0.0.1:1/0",
                                                ready_timeout_seconds=2))  # fmt: skip
    assert type(redis).__name__ == "RedisStorage"
    assert redis.bridge.key_prefix == "shipshape-login"  # type: ignore[attr-defined]
    assert redis.options == {"socket_timeout": 2, "socket_connect_timeout": 2}  # type: ignore[attr-defined]


# --- CSV files ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"), ("\rx", "'\rx"), ("'=x", "''=x"), ("plain", "plain"), ("", ""),
        ("a=b", "a=b"), ("'quoted", "'quoted"),
    ],
)  # fmt: skip
def test_formulas_are_neutralised_and_restored(cell: str, written: str) -> None:
    assert csvfiles.neutralise(cell) == written
    assert csvfiles.restore(written) == cell


def test_postgres_neutralises_the_formulas_python_neutralises() -> None:
    """The SQL an export on Postgres formats its cells with (its output is compared with
    `neutralise`'s on Postgres, tests/integration/test_export_format.py)."""
    assert csvfiles.neutralised_sql("title") == (
        "CASE WHEN left(ltrim(title, ''''), 1) IN (chr(61), chr(43), chr(45), chr(64), chr(9),"
        " chr(13)) THEN '''' || title ELSE title END"
    )


# Postgres's CSV of three rows (quoted LFs, CRs and doubled quotes) and the file the Python
# writer makes of them: only the LFs that end a row become CRLF.
POSTGRES_CSV = b'a,"b\nc",d\n"""\n""",,"x\r"\n"\n\n",e,""""\n'
WRITER_CSV = b'a,"b\nc",d\r\n"""\n""",,"x\r"\r\n"\n\n",e,""""\r\n'


@pytest.mark.parametrize("first", range(len(POSTGRES_CSV) + 1))
def test_row_ends_become_crlf_wherever_the_stream_is_cut(first: int) -> None:
    """Postgres hands the export over in pieces that may end anywhere, inside quotes too."""
    for second in range(first, len(POSTGRES_CSV) + 1):
        line_ends = csvfiles.CrlfLineEnds()
        pieces = (POSTGRES_CSV[:first], POSTGRES_CSV[first:second], POSTGRES_CSV[second:])
        assert b"".join(line_ends(piece) for piece in pieces) == WRITER_CSV
    written = io.StringIO(newline="")
    csv.writer(written).writerows([["a", "b\nc", "d"], ['"\n"', "", "x\r"], ["\n\n", "e", '"']])
    assert written.getvalue().encode() == WRITER_CSV


def csv_file(tmp_path: Path, content: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / "items.csv"
    path.write_bytes(content.encode(encoding))
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty: the first line must be the CSV header"),
        ("\n\n", "the file is empty: the first line must be the CSV header"),
        ("title,Title\n", "duplicate CSV columns: title"),
        ("description\n", "the CSV header must have a `title` column (and optionally `description`)"),
        ("title,price,owner\n", "unknown CSV columns: price, owner"),
        ("title,a\x01b\n", "the CSV header contains control characters"),
    ],
)  # fmt: skip
def test_a_file_that_cannot_be_imported_says_why(
    tmp_path: Path, content: str, message: str
) -> None:
    with (
        pytest.raises(csvfiles.CsvProblem) as problem,
        csvfiles.ItemCsvReader(csv_file(tmp_path, content), max_rows=10) as reader,
    ):
        reader.count()
    assert str(problem.value) == message


def test_unknown_column_names_are_shortened_and_listed_ten_at_most(tmp_path: Path) -> None:
    names = [f"c{n}{'x' * 50}" for n in range(12)]
    with pytest.raises(csvfiles.CsvProblem) as problem:
        csvfiles.ItemCsvReader(csv_file(tmp_path, ",".join(["title", *names]) + "\n"), 10)
    shown = ", ".join(name[:40] for name in names[:10])
    assert str(problem.value) == f"unknown CSV columns: {shown}, ..."
    assert csvfiles._names(["a", "b"]) == "a, b"


def test_rows_come_in_chunks_with_their_lines_and_errors(tmp_path: Path) -> None:
    content = 'Title , description\n\'=1+1,x\n\nonly\nb,c,d\n"multi\nline",y\nlast,z\n'
    with csvfiles.ItemCsvReader(csv_file(tmp_path, "\ufeff" + content), max_rows=10) as reader:
        assert reader.columns == ["title", "description"]
        first = reader.chunk(2)
        second = reader.chunk(2)
        third = reader.chunk(2)
        assert reader.chunk(2) == []
    assert first == [
        csvfiles.Row(2, {"title": "=1+1", "description": "x"}),
        csvfiles.Row(4, None, "has 1 fields, the header has 2"),
    ]
    assert second == [
        csvfiles.Row(5, None, "has 3 fields, the header has 2"),
        csvfiles.Row(7, {"title": "multi\nline", "description": "y"}),
    ]
    assert third == [csvfiles.Row(8, {"title": "last", "description": "z"})]
    assert reader.rows_read == 5


def test_rows_beyond_the_limit_and_overlong_lines_are_refused(tmp_path: Path) -> None:
    rows = "title\n" + "".join(f"t{n}\n" for n in range(3))
    with csvfiles.ItemCsvReader(csv_file(tmp_path, rows), max_rows=3) as reader:
        assert reader.count() == 3
    with (
        pytest.raises(
            csvfiles.CsvProblem, match=r"^the file has more than IMPORT_MAX_ROWS \(2\) rows$"
        ),
        csvfiles.ItemCsvReader(csv_file(tmp_path, rows), max_rows=2) as reader,
    ):
        reader.chunk(10)
    limit = csvfiles.MAX_LINE_CHARS
    assert limit == 5 * (2 * csvfiles.MAX_FIELD_CHARS + 3)
    fits = "title\n" + "x" * (limit - 1) + "\n"  # the newline is one of the characters
    long = "title\n" + "x" * limit + "\n"
    with (
        csvfiles.ItemCsvReader(csv_file(tmp_path, fits), max_rows=3) as reader,
        pytest.raises(csvfiles.CsvProblem, match="field larger than field limit"),
    ):
        reader.count()  # a line that fits, with a field over the CSV module's limit
    message = f"^line 2 is longer than {limit} characters: no valid row is that long$"
    with (
        pytest.raises(csvfiles.CsvProblem, match=message),
        csvfiles.ItemCsvReader(csv_file(tmp_path, long), max_rows=3) as reader,
    ):
        reader.count()


def test_a_file_that_is_not_utf8_is_refused_with_the_line(tmp_path: Path) -> None:
    content = "title\nfine\ncaf\xe9\n"
    with (
        pytest.raises(csvfiles.CsvProblem, match=r"^the file is not UTF-8 text \(after line \d\)$"),
        csvfiles.ItemCsvReader(csv_file(tmp_path, content, "latin-1"), 10) as reader,
    ):
        reader.count()


def test_the_reader_closes_its_file_when_the_header_is_refused(tmp_path: Path) -> None:
    opened: list[io.TextIOWrapper] = []
    real_open = Path.open

    def tracking_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, *args, **kwargs)
        opened.append(handle)
        return handle

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "open", tracking_open)
        with pytest.raises(csvfiles.CsvProblem):
            csvfiles.ItemCsvReader(csv_file(tmp_path, "nope\n"), 10)
        reader = csvfiles.ItemCsvReader(csv_file(tmp_path, "title\n"), 10)
        with reader:
            assert not opened[-1].closed
    assert all(handle.closed for handle in opened)


def test_the_writer_neutralises_every_text_cell(tmp_path: Path) -> None:
    out = io.StringIO()
    write = csvfiles.writer(out)
    write.writerow(["title", "=cmd", 5])
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    write.write_items([(OWNER, "+x", None, when, when), (OTHER, "ok", "@y", when, when)])
    assert out.getvalue().splitlines() == [
        "title,'=cmd,5",
        f"{OWNER},'+x,,2026-01-02T03:04:05+00:00,2026-01-02T03:04:05+00:00",
        f"{OTHER},ok,'@y,2026-01-02T03:04:05+00:00,2026-01-02T03:04:05+00:00",
    ]


# --- what mutation testing asked for ------------------------------------------------

REAL_RESOLVE = egress.resolve  # before the fast tier's stub DNS replaces it per test


def test_only_brackets_are_taken_off_an_address_literal() -> None:
    # Not an address: looked up as a name (which the fast tier's stub DNS does not know).
    with pytest.raises(socket.gaierror):
        egress.checked_addresses("X10.0.0.1X", 443, allow_private=False)


def test_resolve_asks_for_stream_sockets_once_per_address() -> None:
    assert REAL_RESOLVE("127.0.0.2", 80) == [ipaddress.ip_address("127.0.0.2")]
    assert REAL_RESOLVE("::1", 443) == [ipaddress.ip_address("::1")]


def test_a_device_token_signed_over_an_unusual_body_is_judged_on_its_parts() -> None:
    settings = guard_settings()
    key = settings.secret_key

    def signed(body: str) -> str:
        return f"{body}.{login_guard._device_signature(key, body)}"

    # Only ASCII is looked at, even correctly signed.
    assert login_guard.device_user(settings, signed(f"{OWNER.hex}.nonceé")) is None
    # The user is before the first dot: the nonce may hold more.
    assert login_guard.device_user(settings, signed(f"{OWNER.hex}.a.b")) == (OWNER, "a.b")
    assert login_guard.device_user(settings, signed(f"{OWNER.hex}.")) is None  # no nonce


def test_the_counters_are_named_by_what_they_count() -> None:
    """The keys an operator finds in Redis (`shipshape-login` prefix there)."""
    settings = guard_settings(login_failures_per_account="3/minute",
                              login_failures_per_client="5/hour")  # fmt: skip
    guard = login_guard.LoginGuard(settings)
    asyncio.run(guard.failed("Ann", "10.0.0.1"))
    asyncio.run(guard.failed("bob", "10.0.0.2", device="n0nce"))
    events = guard.limiter.storage.events  # type: ignore[attr-defined]
    assert sorted(events) == [
        "LIMITER/account/ann/10.0.0.1/3/1/minute",
        "LIMITER/account/bob/10.0.0.2/3/1/minute",
        "LIMITER/client/10.0.0.1/5/1/hour",
        "LIMITER/device/n0nce/3/1/minute",
    ]


def test_a_known_device_still_counts_for_its_account_at_that_address() -> None:
    settings = guard_settings(login_failures_per_account="2/minute")
    guard = login_guard.LoginGuard(settings)

    async def scenario() -> None:
        await guard.failed("ann", "10.0.0.5", device="first")
        await guard.failed("ann", "10.0.0.5", device="first")
        # Another device of the account, from the same address: the account's counter there
        # is spent, whichever device asks.
        assert await guard.retry_after("ann", "10.0.0.5", device="second") is not None

    asyncio.run(scenario())


def test_the_wait_is_what_is_left_of_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    settings = guard_settings(login_failures_per_account="1/minute")
    guard = login_guard.LoginGuard(settings)
    asyncio.run(guard.failed("ann", "10.0.0.1"))
    now[0] += 30
    assert asyncio.run(guard.retry_after("ann", "10.0.0.1")) == 30
    now[0] += 29.5
    assert asyncio.run(guard.retry_after("ann", "10.0.0.1")) == 1  # rounded up, at least 1
    now[0] += 1
    assert asyncio.run(guard.retry_after("ann", "10.0.0.1")) is None


def test_failures_and_throttling_are_logged_with_their_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = guard_settings(login_failures_per_account="1/minute")
    guard = login_guard.LoginGuard(settings)
    login = "a" * 70
    with caplog.at_level("INFO", logger="app.security"):
        asyncio.run(guard.failed(login, "10.0.0.1"))
        asyncio.run(guard.retry_after(login, "10.0.0.1"))
        asyncio.run(guard.retry_after(login, "10.0.0.1", device="d"))
    records = [(r.levelname, r.getMessage(), r.fields) for r in caplog.records]  # type: ignore[attr-defined]
    failed = {"event": "login_failed", "login": "a" * 64, "client": "10.0.0.1"}
    throttled = {"event": "login_throttled", "login": "a" * 64, "client": "10.0.0.1"}
    assert records == [
        ("INFO", "login failed", failed),
        ("WARNING", "login throttled", {**throttled, "device": False}),
        ("WARNING", "login throttled", {**throttled, "device": True}),
    ]


def test_an_unavailable_storage_is_logged_with_its_error(caplog: pytest.LogCaptureFixture) -> None:
    guard = login_guard.LoginGuard(guard_settings())
    guard.limiter = _Broken()  # type: ignore[assignment]
    limit = login_guard.RequestLimit(guard, "1/hour", "password-reset")
    asyncio.run(guard.retry_after("ann", "10.0.0.1"))
    asyncio.run(guard.failed("ann", "10.0.0.1"))
    asyncio.run(guard.succeeded("ann", "10.0.0.1"))
    asyncio.run(limit.take("key"))
    unavailable = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert [bool(r.exc_info) for r in unavailable] == [True, True, True, False]
    assert unavailable[-1].fields == {"limit": "password-reset"}  # type: ignore[attr-defined]


def test_unknown_columns_are_elided_only_beyond_ten() -> None:
    ten = [f"c{n}" for n in range(10)]
    assert csvfiles._names(ten) == ", ".join(ten)
    assert csvfiles._names([*ten, "c10"]) == ", ".join(ten) + ", ..."


def test_line_breaks_inside_a_field_are_kept_as_written(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_bytes(b'title,description\r\n"two\r\nlines","a\rb"\r\n')
    with csvfiles.ItemCsvReader(path, max_rows=10) as reader:
        (row,) = reader.chunk(10)
    assert row.values == {"title": "two\r\nlines", "description": "a\rb"}


def test_a_deadline_stream_passes_a_shorter_timeout_and_ends_exactly_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(time, "monotonic", lambda: 100.0)
    inner = _Stream()
    stream = egress_backend._DeadlineStream(inner, 130.0)
    stream.write(b"x", 5.0)
    tls = stream.start_tls("context", "example.com", 5.0)
    assert [call[1][-1] for call in inner.calls] == [5.0, 5.0]
    assert isinstance(tls, egress_backend._DeadlineStream)
    assert isinstance(tls._stream, _Stream)
    assert tls._stream is not inner
    assert egress_backend._DeadlineStream(_Stream(), 100.5)._left(None) == 0.5
    with pytest.raises(httpcore.ReadTimeout):
        egress_backend._DeadlineStream(_Stream(), 100.0)._left(None)


def test_the_backend_passes_the_port_and_options_on(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Any, ...]] = []

    def connect(self: Any, *args: Any) -> httpcore.NetworkStream:
        seen.append(args)
        return _Stream()

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", connect)
    asked: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[egress.IPAddress]:
        asked.append((host, port))
        return [ipaddress.ip_address("192.0.2.7")]

    monkeypatch.setattr(egress, "resolve", resolve)
    backend = egress_backend.EgressBackend(allow_private=True, total_timeout=30)
    backend.connect_tcp("hook.example", 8443, 4.0, "10.9.9.9", ["option"])
    assert asked == [("hook.example", 8443)]
    assert seen == [("192.0.2.7", 8443, 4.0, "10.9.9.9", ["option"])]


def test_an_invalid_address_says_so_in_the_rules_words() -> None:
    with pytest.raises(ValueError, match=r"^value is not a valid e-mail address$"):
        text._email("not an address")


def test_tokens_are_signed_with_the_configured_algorithm_at_the_utc_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = "s" * 64  # HS512 wants 64 bytes
    settings = load_settings(environment="test", jwt_secret_key=key, jwt_algorithm="HS512")
    monkeypatch.setenv("TZ", "America/New_York")  # a local time far from UTC
    time.tzset()
    try:
        token = security.create_access_token(settings, OWNER, 0)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert jwt.get_unverified_header(token)["alg"] == "HS512"
    issued = jwt.decode(token, key, algorithms=["HS512"])["iat"]
    assert abs(issued - time.time()) < 60
