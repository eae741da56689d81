"""Reaching the cluster before doing any work: how many brokers answer, or one plain line
saying why not (credentials refused, an untrusted certificate, nothing listening). A wrong
password fails at once instead of after a long timeout."""

from __future__ import annotations

import re
import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from app.kafka.config import QUIET_LIBRDKAFKA, admin_config
from app.kafka.security import ENV, KafkaSecurity, SecurityConfigError, security_of
from app.settings import Settings


class ClusterUnreachable(Exception):
    """The cluster did not answer; str() is one line for the user, never a secret."""


def reason_of(text: str) -> str:
    """librdkafka's text without the broker prefix and the timing suffix."""
    text = re.sub(r"^\S+://\S+?/(bootstrap|\d+): ", "", text.strip())
    return re.sub(r" \(after \d+ms in state \w+\)$", "", text)


def refusal(errors: list[tuple[str, str]], where: str, security: KafkaSecurity) -> str | None:
    """A definitive refusal among librdkafka's errors (name, text), as one line; None when
    nothing says that retrying cannot help."""
    for name, text in errors:
        reason = reason_of(text)
        if name == "_AUTHENTICATION":
            return (f"authentication failed at {where} ({security.describe()}): {reason}; "
                    f"check {ENV}SASL_USERNAME and {ENV}SASL_PASSWORD")
        if name == "_SSL":
            return (f"TLS handshake with {where} failed: {reason}; "
                    f"check {ENV}SSL_CAFILE")
        if name == "_TRANSPORT" and "alert" in reason and "certificate" in reason:
            return (f"the broker at {where} refused the TLS client certificate: {reason}; "
                    f"check {ENV}SSL_CERTFILE and {ENV}SSL_KEYFILE")
    return None


def cluster_size(settings: Settings, timeout: float = 30.0) -> int:
    """How many brokers the cluster lists, through the configured security settings."""
    where = settings.kafka_bootstrap_servers
    try:
        security = security_of(settings)
    except SecurityConfigError as exc:
        raise ClusterUnreachable(f"invalid Kafka security settings: {exc}") from exc
    errors: list[tuple[str, str]] = []

    def on_error(error: KafkaError) -> None:
        errors.append((error.name(), error.str()))

    admin = AdminClient(admin_config(settings, error_cb=on_error, logger=QUIET_LIBRDKAFKA))
    deadline = time.monotonic() + timeout
    while True:
        try:
            # Short slices: a refusal arrives through error_cb, served between them.
            slice_s = max(0.1, min(0.5, deadline - time.monotonic()))
            return len(admin.list_topics(timeout=slice_s).brokers)
        except KafkaException as exc:
            admin.poll(0)  # serves error_cb
            refused = refusal(errors, where, security)
            if refused:
                raise ClusterUnreachable(refused) from None
            if time.monotonic() >= deadline:
                seen = [reason_of(text) for name, text in errors if name != "_ALL_BROKERS_DOWN"]
                last = seen[-1] if seen else str(exc.args[0].str() if exc.args else exc)
                raise ClusterUnreachable(
                    f"cannot reach Kafka at {where} ({security.describe()}) within "
                    f"{timeout:.0f} s: {last}") from None
