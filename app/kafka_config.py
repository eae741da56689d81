"""confluent-kafka client configuration shared by the client API, the CLI and tools."""

from __future__ import annotations

from typing import Any

from app.settings import Settings


def common_config(settings: Settings) -> dict[str, Any]:
    """What every client (producer, consumer, admin) needs to reach the cluster. Every
    confluent-kafka client in the project starts from this, so connection settings added
    here (TLS, SASL) apply everywhere."""
    return {"bootstrap.servers": settings.kafka_bootstrap_servers}


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
