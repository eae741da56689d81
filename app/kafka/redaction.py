"""Secrets never reach a log line: every log record made in this process has the configured
secrets (Kafka SASL password, TLS key password, the object-store signing key) replaced by
"***", whichever library logs it and wherever its handlers write."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import SecretStr

from app.settings import Settings

MASK = "***"
# Shorter values would mask ordinary words all over the log.
MIN_SECRET_LENGTH = 4
# Every SecretStr field of the settings, so a new secret is masked without a list to keep.
SECRET_FIELDS = tuple(name for name, field in Settings.model_fields.items()
                      if "SecretStr" in str(field.annotation))


def secret_values(settings: Settings) -> list[str]:
    """The configured secret values worth masking, longest first (a secret containing
    another is masked whole)."""
    found = set()
    for name in SECRET_FIELDS:
        value = getattr(settings, name, None)
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
            if len(text) >= MIN_SECRET_LENGTH:
                found.add(text)
    return sorted(found, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


_installed: list[str] = []
_base_factory: Callable[..., logging.LogRecord] | None = None


def _redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    assert _base_factory is not None
    record = _base_factory(*args, **kwargs)
    if not _installed:
        return record
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: leave it to the handler to report
        return record
    # Empty args, not None: formatters such as mode's wrap a non-tuple into a 1-tuple.
    record.msg, record.args = redact(message, _installed), ()
    if record.exc_info and not record.exc_text:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info),
                                 _installed)
    if record.stack_info:
        record.stack_info = redact(record.stack_info, _installed)
    return record


def install(settings: Settings) -> None:
    """Mask the settings' secrets in every log record from now on (idempotent)."""
    global _base_factory
    secrets = secret_values(settings)
    _installed[:] = sorted(set(_installed) | set(secrets), key=len, reverse=True)
    if _base_factory is None:
        _base_factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_redacting_factory)
