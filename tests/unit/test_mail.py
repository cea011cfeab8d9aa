"""The service's e-mail against a real SMTP server (aiosmtpd): plain text and HTML, the
SMTP_SECURITY setting honoured (never sent in clear when TLS is asked for), the relay's
certificate verified, transient failures retried and permanent ones not."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from app.core.config import Settings
from app.services.mail import Mail, MailNotSent, send
from tests.helpers import make_settings
from tests.mailbox import Mailbox, certificates, smtp_server

MAIL = Mail(to="alice@example.com", subject="Hello", text="plain body", html="<p>html body</p>")


def _settings(tmp_path: Path, port: int, **extra: Any) -> Settings:
    return make_settings(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path}/app.db",
        smtp_host="127.0.0.1",
        smtp_port=port,
        # Generous: a busy machine answers slowly; only the refusals are expected to fail.
        **{"smtp_timeout_seconds": 60, **extra},
    )


def test_a_message_goes_out_as_plain_text_and_html(tmp_path: Path) -> None:
    box = Mailbox()
    with smtp_server(box) as port:
        send(_settings(tmp_path, port, smtp_security="none", smtp_from="app@example.com"), MAIL)
    [message] = box.messages
    assert (message["From"], message["To"], message["Subject"]) == (
        "app@example.com",
        "alice@example.com",
        "Hello",
    )
    plain = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert plain is not None
    assert plain.get_content().strip() == "plain body"
    assert html is not None
    assert html.get_content().strip() == "<p>html body</p>"
    assert box.tls == [False]


def test_starttls_is_used_and_the_relay_certificate_verified(tmp_path: Path) -> None:
    certs = certificates(tmp_path)
    box = Mailbox()
    with smtp_server(box, starttls=certs.server) as port:
        send(_settings(tmp_path, port, smtp_ca_file=str(certs.ca_file)), MAIL)
        assert box.tls == [True]
        # A relay whose certificate the client cannot verify gets nothing.
        with pytest.raises(MailNotSent, match="CERTIFICATE_VERIFY_FAILED"):
            send(_settings(tmp_path, port), MAIL, backoff_seconds=0)
    assert len(box.messages) == 1


def test_starttls_asked_for_but_not_offered_sends_nothing_in_clear(tmp_path: Path) -> None:
    box = Mailbox()
    # A relay that offers no STARTTLS.
    with smtp_server(box) as port, pytest.raises(MailNotSent, match="STARTTLS"):
        send(_settings(tmp_path, port, smtp_security="starttls"), MAIL, backoff_seconds=0)
    assert box.messages == []


def test_implicit_tls(tmp_path: Path) -> None:
    certs = certificates(tmp_path)
    box = Mailbox()
    with smtp_server(box, implicit=certs.server) as port:
        send(_settings(tmp_path, port, smtp_security="tls", smtp_ca_file=str(certs.ca_file)), MAIL)
        # Spoken to in clear, the same relay (TLS from the first byte) never greets: nothing
        # is sent.
        clear = _settings(
            tmp_path, port, smtp_security="none", smtp_timeout_seconds=1, mail_max_attempts=1
        )
        with pytest.raises(MailNotSent):
            send(clear, MAIL, backoff_seconds=0)
    assert box.tls == [True]


def test_a_transient_refusal_is_retried_and_a_dead_relay_given_up(tmp_path: Path) -> None:
    box = Mailbox(refuse=2)
    with smtp_server(box) as port:
        send(_settings(tmp_path, port, smtp_security="none", mail_max_attempts=3), MAIL,
             backoff_seconds=0)  # fmt: skip
    assert (box.refused, len(box.messages)) == (2, 1)
    box = Mailbox(refuse=5)
    with smtp_server(box) as port, pytest.raises(MailNotSent, match="451"):
        send(_settings(tmp_path, port, smtp_security="none", mail_max_attempts=3), MAIL,
             backoff_seconds=0)  # fmt: skip
    assert (box.refused, box.messages) == (3, [])


def test_without_smtp_host_the_message_goes_to_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/app.db")
    assert settings.smtp_host == ""
    with caplog.at_level(logging.INFO, logger="app.mail"):
        send(settings, MAIL)
    [record] = [r for r in caplog.records if r.name == "app.mail"]
    assert record.fields["body"] == "plain body"  # type: ignore[attr-defined]
