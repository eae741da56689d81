"""One settings object, read from environment variables (documented in the README)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECOVERY_", extra="ignore", populate_by_name=True)

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS", "RECOVERY_KAFKA_BOOTSTRAP_SERVERS"
        ),
    )
    # How clients authenticate to Kafka (app/kafka_security.py, docs/security.md):
    # PLAINTEXT, SSL (TLS, with a client certificate when certfile/keyfile are set),
    # SASL_SSL or SASL_PLAINTEXT. Passwords are SecretStr: never printed or logged.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_ssl_check_hostname: bool = True
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    schema_registry_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SCHEMA_REGISTRY_URL", "RECOVERY_SCHEMA_REGISTRY_URL"),
    )
    # How registry subjects are named (app/avro/codec.py SubjectStrategy, docs/schemas.md):
    # "catalog" (the schemas/ subject, e.g. failure-event), "topic" (<topic>-value, Confluent's
    # default) or "record" (the record's full name). Only used with SCHEMA_REGISTRY_URL.
    schema_subject_strategy: Literal["catalog", "topic", "record"] = "catalog"
    # Prepended to every topic name from topics/: lets several deployments (or test runs)
    # share one cluster without seeing each other's records.
    topic_prefix: str = ""
    app_id: str = "recovery"
    data_dir: Path = REPO_ROOT / "var"
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    # Access to the web pages (app/worker/web/access.py, docs/console.md): each token is a
    # bearer token and the basic-auth password of the user named after its role ("viewer",
    # "operator"). Unset on a loopback host: open, everyone an operator; unset beyond it:
    # every request is answered 401. SecretStr: never printed or logged.
    web_viewer_token: SecretStr | None = None
    web_operator_token: SecretStr | None = None
    topics_dir: Path = REPO_ROOT / "topics"
    schemas_dir: Path = REPO_ROOT / "schemas"
    object_store_url: str = ""
    log_level: str = "info"
    # TOML file whose classification rules and retry schedules override the defaults.
    policy_file: Path | None = None
    # "at_least_once" (with idempotent incident state) or Faust's "exactly_once".
    processing_guarantee: str = "at_least_once"
    commit_interval_s: float = 1.0
    # The agents take their input in batches of up to batch_size records, waiting at most
    # batch_wait_ms for a batch to fill (docs/benchmarks/pipeline.md); a batch's inputs are
    # acknowledged once all its outputs are.
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    batch_wait_ms: int = Field(default=20, ge=1, le=1000)
    # After SIGTERM/SIGINT the worker exits within this many seconds, finished or not.
    shutdown_timeout_s: float = 30.0
    # Scenario 4's recovery watch: checks every 15 s for up to 5 minutes.
    health_check_interval_ms: int = 15_000
    recovery_watch_ms: int = 300_000
    heartbeat_stale_ms: int = 45_000
    # A due retry for an unhealthy consumer waits this long before it is looked at again
    # (the source's 30 s dead-letter retry).
    hold_retry_ms: int = 30_000
    # The incident watchdog (app/pipeline/watchdog.py): a redelivered retry not acknowledged
    # (nor failed again) within ack_timeout_ms is sent once more, then dead-lettered; the
    # worker looks for incidents past their deadline every watchdog_interval_ms (0 = off).
    ack_timeout_ms: int = 60_000
    watchdog_interval_ms: int = 5_000
    # An intake partition with records waiting that its agent has not touched for this long
    # is rescued: sought again, then a group rejoin, then exit 4 (app/worker/stall.py; 0 = off).
    input_stall_s: float = 30.0
    # A rebalance (join and sync, not the restore of tables) lasting this long gets a group
    # rejoin (a pending coordinator error consumed first), and lasting it again, exit 4
    # (app/worker/stall.py; 0 = off). Above Faust's 60 s rebalance timeout.
    rebalance_bound_s: float = 90.0
    # Consumer-lag monitoring (app/lag): the worker takes a snapshot every lag_interval_s
    # (0 = off) of the groups matching lag_groups (comma-separated globs, empty = all);
    # statuses are judged over the last lag_window snapshots.
    lag_interval_s: float = 10.0
    lag_groups: str = ""
    lag_window: int = 10

    # Oversized messages (app/oversize, docs/oversized-messages.md). The claim-check store is
    # object_store_url (empty = file://<data_dir>/objects), under object_store_prefix;
    # object_store_endpoint_url points boto3 at a non-AWS S3 API (MinIO, moto).
    object_store_prefix: str = "claim-checks/"
    object_store_endpoint_url: str | None = None
    object_store_region: str = "us-east-1"
    # Credentials for the S3 API; unset, boto3's own chain is used (AWS_ACCESS_KEY_ID and
    # AWS_SECRET_ACCESS_KEY, a profile, an instance role). The secret is never logged.
    object_store_access_key_id: str | None = None
    object_store_secret_access_key: SecretStr | None = None
    # HMAC-SHA256 key signing claim-check references (a SecretStr: never printed or logged).
    object_store_signing_key: SecretStr | None = None
    object_store_retention_ms: int = 7 * 24 * 3600 * 1000
    # Per-topic strategy settings as JSON, e.g. {"orders": {"force": "fragmentation"},
    # "*": {"disable": ["external_storage"]}}; keys: force, disable, codecs,
    # max_message_bytes, max_fragmented_bytes.
    oversize_topics: dict[str, dict[str, object]] = {}
    # Limit used when a topic's max.message.bytes cannot be read.
    oversize_max_message_bytes: int = 1_000_000
    # Reassembly: incomplete fragment sets go to the dead-letter topic after this long;
    # buffers above the memory cap spill to disk (or fail the set when spill is off).
    fragment_expiry_ms: int = 300_000
    reassembly_memory_bytes: int = 512 * 1024 * 1024
    reassembly_spill: bool = True
    reassembly_max_message_bytes: int = 4 * 1024 * 1024 * 1024

    # Scenarios 5-7 (app/scenarios): deadline watches are checked every
    # scenario_watch_interval_ms (the source's 10 s partition connectivity check); a partition
    # not healed after partition_watch_ms (30 min) is escalated; a cache refresh not verified
    # within cache_verify_timeout_ms counts as still inconsistent, and caching for that key is
    # then disabled for cache_disable_ms (5 min); failure patterns seen within
    # coordination_window_ms of each other are recovered together, by a plan run
    # coordination_settle_ms later (the per-incident recoveries have started by then).
    scenario_watch_interval_ms: int = 10_000
    partition_watch_ms: int = 1_800_000
    cache_verify_timeout_ms: int = 30_000
    cache_disable_ms: int = 300_000
    coordination_window_ms: int = 60_000
    coordination_settle_ms: int = 30_000

    # Scenario 3 (app/scenarios/event_delivery.py): a topic an event could not be delivered
    # to because it does not exist is created from its topics/ definition when this is on.
    create_missing_topics: bool = False

    def topic(self, logical_name: str) -> str:
        return f"{self.topic_prefix}{logical_name}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
