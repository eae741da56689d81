"""confluent-kafka client configuration shared by the client API, the CLI and tools."""

from __future__ import annotations

from typing import Any

from app.kafka.security import librdkafka_config, security_of
from app.settings import Settings, get_settings


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
        **overrides,
    }
