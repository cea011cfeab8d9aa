"""Sending the service's e-mail through an SMTP relay (SMTP_* settings), or to the log.

Without SMTP_HOST (`make run`) a message is written to the log, link included, so every
flow works on a laptop. With it, a message goes out as plain text and HTML through
`smtplib` (the standard library: a blocking client, so it runs in the worker or in a
thread), over STARTTLS (refused when the relay does not offer it: never sent in clear
because the relay said nothing), implicit TLS, or, for a relay on a private network, none.
The relay's certificate and host name are verified (SMTP_CA_FILE for a private CA).

Failures that may pass (a refused or dropped connection, a 4xx answer) are retried with
exponential backoff by `tenacity`, MAIL_MAX_ATTEMPTS in all; a permanent one (5xx, a
certificate that does not verify, no STARTTLS) is not: retrying cannot fix configuration.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage

from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from app.core.config import Settings, SmtpSecurity
from app.core.logging import describe_error, log_fields

logger = logging.getLogger("app.mail")


@dataclass(frozen=True, slots=True)
class Mail:
    to: str
    subject: str
    text: str
    html: str


class MailNotSent(Exception):
    """Every attempt failed, or one failed for good."""


def transient(exc: BaseException) -> bool:
    """Whether trying again later may succeed."""
    if isinstance(exc, ssl.SSLError | smtplib.SMTPNotSupportedError):
        return False  # a certificate or a relay without STARTTLS: configuration
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(400 <= code < 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    return isinstance(exc, smtplib.SMTPServerDisconnected | OSError)


def message_of(settings: Settings, mail: Mail) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message.set_content(mail.text)
    message.add_alternative(mail.html, subtype="html")
    return message


def send(settings: Settings, mail: Mail, *, backoff_seconds: float = 2.0) -> None:
    """Send the message, or raise MailNotSent. Blocking."""
    if not settings.smtp_host:
        logger.info(
            "e-mail written to the log (SMTP_HOST is not set)",
            extra=log_fields(event="mail_logged", to=mail.to, subject=mail.subject, body=mail.text),
        )
        return
    message = message_of(settings, mail)
    retrying = Retrying(
        stop=stop_after_attempt(settings.mail_max_attempts),
        wait=wait_exponential(multiplier=backoff_seconds, max=300),
        retry=retry_if_exception(transient),
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                _deliver(settings, message)
    except Exception as exc:
        logger.error(
            "e-mail not sent",
            extra=log_fields(event="mail_failed", subject=mail.subject, error=describe_error(exc)),
        )
        raise MailNotSent(describe_error(exc)) from exc
    logger.info("e-mail sent", extra=log_fields(event="mail_sent", subject=mail.subject))


def _deliver(settings: Settings, message: EmailMessage) -> None:
    context = ssl.create_default_context(cafile=settings.smtp_ca_file or None)
    timeout = settings.smtp_timeout_seconds
    smtp: smtplib.SMTP
    if settings.smtp_security is SmtpSecurity.TLS:
        smtp = smtplib.SMTP_SSL(
            settings.smtp_host, settings.smtp_port, timeout=timeout, context=context
        )
    else:
        smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout)
    with smtp:
        if settings.smtp_security is SmtpSecurity.STARTTLS:
            smtp.starttls(context=context)  # SMTPNotSupportedError when not offered
        if settings.smtp_username:
            smtp.login(settings.smtp_username, settings.smtp_password)
        smtp.send_message(message)
