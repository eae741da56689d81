"""confluent-kafka client configuration shared by the client API, the CLI and tools."""

from __future__ import annotations

import logging
from typing import Any

from app.kafka.security import librdkafka_config, security_of
from app.settings import Settings, get_settings

# librdkafka's own log lines for clients whose result is one plain line (the CLI's admin
# client, the cluster check) go nowhere: the command reports errors itself.
QUIET_LIBRDKAFKA = logging.getLogger("app.kafka.librdkafka.quiet")
QUIET_LIBRDKAFKA.addHandler(logging.NullHandler())
QUIET_LIBRDKAFKA.propagate = False


def common_config(settings: Settings) -> dict[str, Any]:
    """What every client (producer, consumer, admin) needs to reach the cluster. Every
    confluent-kafka client in the project starts from this, so connection settings added
    here (TLS, SASL) apply everywhere. Raises SecurityConfigError for contradictory
    security settings."""
    return {"bootstrap.servers": settings.kafka_bootstrap_servers,
            **librdkafka_config(security_of(settings))}


def for_bootstrap(bootstrap: str, settings: Settings | None = None) -> Settings:
    """The settings (by default the environment's) pointed at another bootstrap address: for
    callers that are handed an address but must still authenticate like everyone else."""
    base = settings or get_settings()
    if base.kafka_bootstrap_servers == bootstrap:
        return base
    return base.model_copy(update={"kafka_bootstrap_servers": bootstrap})


def admin_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    return {**common_config(settings), **overrides}


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    return {
        **common_config(settings),
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        # The Java client's and aiokafka's partitioner: a key produced here lands in the same
        # partition as the same key produced by the worker, which the co-partitioned incident
        # table depends on (librdkafka's default, consistent_random, hashes differently).
        "partitioner": "murmur2_random",
        **overrides,
    }


def consumer_config(settings: Settings, group: str, **overrides: Any) -> dict[str, Any]:
    return {
        **common_config(settings),
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        # A subscribed topic that is not in the metadata yet (just created, and the broker
        # asked has not heard of it) is looked up again at the next refresh: librdkafka's
        # default, 5 minutes, left a service deaf to its redelivery topic for that long.
        "topic.metadata.refresh.interval.ms": 10_000,
        **overrides,
    }
