"""Topic definitions as data (topics/*.toml) and their idempotent application to a cluster."""

from __future__ import annotations

import time
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)
    purpose: str = ""

    def prefixed(self, prefix: str) -> TopicSpec:
        return TopicSpec(
            prefix + self.name, self.partitions, self.replication_factor, self.config, self.purpose
        )


def load_topic_specs(topics_dir: Path) -> list[TopicSpec]:
    specs: dict[str, TopicSpec] = {}
    for path in sorted(topics_dir.glob("*.toml")):
        data = tomllib.loads(path.read_text())
        defaults = data.get("defaults", {})
        default_config = {k: str(v) for k, v in defaults.get("config", {}).items()}
        for entry in data.get("topic", []):
            name = entry["name"]
            if name in specs:
                raise ValueError(f"topic {name!r} is defined twice (second time in {path.name})")
            config = dict(default_config)
            config.update({k: str(v) for k, v in entry.get("config", {}).items()})
            specs[name] = TopicSpec(
                name=name,
                partitions=int(entry.get("partitions", defaults.get("partitions", 1))),
                replication_factor=int(
                    entry.get("replication_factor", defaults.get("replication_factor", 1))
                ),
                config=config,
                purpose=entry.get("purpose", ""),
            )
    return list(specs.values())


def fit_to_cluster(spec: TopicSpec, broker_count: int) -> tuple[TopicSpec, list[str]]:
    """Cap the replication factor to the cluster size, and min.insync.replicas to that factor,
    since a min ISR above the replica count would refuse every acks=all write."""
    warnings: list[str] = []
    rf = spec.replication_factor
    if rf > broker_count:
        warnings.append(
            f"{spec.name}: replication factor {rf} capped to {broker_count} (cluster size)"
        )
        rf = broker_count
    config = dict(spec.config)
    min_isr = config.get("min.insync.replicas")
    if min_isr is not None and int(min_isr) > rf:
        warnings.append(f"{spec.name}: min.insync.replicas {min_isr} capped to {rf}")
        config["min.insync.replicas"] = str(rf)
    return TopicSpec(spec.name, spec.partitions, rf, config, spec.purpose), warnings


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    altered: dict[str, dict[str, tuple[str | None, str]]] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Partition-count changes refused: co-partitioned topics (see `copartitioned_names`).
    refused: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = grouped_warnings(self.warnings)
        out += [f"created {name}" for name in self.created]
        for name, changes in self.altered.items():
            for key, (old, new) in changes.items():
                out.append(f"altered {name}: {key} {old} -> {new}")
        out += [f"drift: {d}" for d in self.drift]
        out += [f"refused: {r}" for r in self.refused]
        if self.refused:
            out.append(MIGRATION)
        out.append(
            f"{len(self.created)} created, {len(self.altered)} altered, "
            f"{len(self.unchanged)} unchanged, {len(self.drift)} drifted"
        )
        return out


INTAKE = "recovery.failures"
MIGRATION = (
    "how to migrate: a co-partitioned topic's partition count cannot change in place (a "
    "key's records would move to another partition while its incident state stays in the "
    "old one). Apply the definitions under a new RECOVERY_TOPIC_PREFIX and RECOVERY_APP_ID, "
    "start workers on them, point the services' reporters there, let the old workers finish "
    "the old topics (recovery lag shows no lag), then stop them; or keep the cluster's count "
    "by setting `partitions` in topics/ (README: \"Changing partition counts\")")


def copartitioned_names(specs: Iterable[TopicSpec], prefix: str = "") -> set[str]:
    """The topics co-partitioned with the intake topic: those defined with its partition
    count. The worker's tables take that count, and Faust needs a table and the topics its
    agents read to agree."""
    specs = list(specs)
    intake = next((s for s in specs if s.name == prefix + INTAKE), None)
    if intake is None:
        return set()
    return {s.name for s in specs if s.partitions == intake.partitions}


def grouped_warnings(warnings: list[str]) -> list[str]:
    """One line per kind of warning ("replication factor 3 capped to 1 ...") naming the
    topics it applies to, rather than one line per topic and kind."""
    topics_by_message: dict[str, list[str]] = {}
    for warning in warnings:
        topic, _, message = warning.partition(": ")
        topics_by_message.setdefault(message, []).append(topic)
    return [f"warning: {message}: {', '.join(topics)}"
            for message, topics in topics_by_message.items()]


def apply_topics(
    admin: AdminClient, specs: Iterable[TopicSpec], *, dry_run: bool = False, timeout: float = 30,
    prefix: str = "",
) -> ApplyReport:
    """Create missing topics and align changed configs. Never deletes anything; differences
    that cannot be fixed safely (partition count, replication factor) are reported as drift;
    a partition count differing on a co-partitioned topic is refused, with how to migrate.
    `prefix` is the one the specs' names carry."""
    report = ApplyReport()
    metadata = admin.list_topics(timeout=timeout)
    broker_count = len(metadata.brokers)
    fitted: list[TopicSpec] = []
    for spec in specs:
        spec, warnings = fit_to_cluster(spec, broker_count)
        report.warnings += warnings
        fitted.append(spec)

    missing = [s for s in fitted if s.name not in metadata.topics]
    existing = [s for s in fitted if s.name in metadata.topics]
    if missing and not dry_run:
        new_topics = [
            NewTopic(s.name, s.partitions, s.replication_factor, config=s.config) for s in missing
        ]
        for future in admin.create_topics(new_topics, operation_timeout=timeout).values():
            try:
                future.result()
            except Exception as exc:  # a concurrent creator is not an error
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
    report.created = [s.name for s in missing]

    copartitioned = copartitioned_names(fitted, prefix)
    for spec in existing:
        partitions = metadata.topics[spec.name].partitions
        if len(partitions) != spec.partitions:
            difference = (f"{spec.name}: {len(partitions)} partitions, definition says "
                          f"{spec.partitions}")
            if spec.name in copartitioned:
                report.refused.append(f"{difference} (co-partitioned with {prefix}{INTAKE})")
            else:
                report.drift.append(difference)
        replicas = len(next(iter(partitions.values())).replicas) if partitions else 0
        if replicas != spec.replication_factor:
            report.drift.append(
                f"{spec.name}: replication factor {replicas}, "
                f"definition says {spec.replication_factor}"
            )

    if existing:
        described = described_configs(admin, [s.name for s in existing], timeout)
        to_alter: list[ConfigResource] = []
        for spec in existing:
            current = described[spec.name]
            changes = {
                key: (current.get(key), value)
                for key, value in spec.config.items()
                if current.get(key) != value
            }
            if not changes:
                report.unchanged.append(spec.name)
                continue
            report.altered[spec.name] = changes
            to_alter.append(
                ConfigResource(
                    ConfigResource.Type.TOPIC,
                    spec.name,
                    incremental_configs=[
                        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                        for k, (_, v) in changes.items()
                    ],
                )
            )
        if to_alter and not dry_run:
            for future in admin.incremental_alter_configs(to_alter).values():
                future.result()
    return report


def described_configs(admin: AdminClient, names: list[str], timeout: float = 30.0
                      ) -> dict[str, dict[str, str | None]]:
    """Each named topic's configuration. A topic another process has just created is in the
    metadata before every broker knows it: the broker asked may answer "unknown topic"
    (two workers starting together crashed on it), so that answer is asked again until
    `timeout`."""
    deadline = time.monotonic() + timeout
    found: dict[str, dict[str, str | None]] = {}
    pending = list(names)
    while pending:
        resources = {name: ConfigResource(ConfigResource.Type.TOPIC, name) for name in pending}
        described = admin.describe_configs(list(resources.values()), request_timeout=timeout)
        unknown: list[str] = []
        for name, resource in resources.items():
            try:
                found[name] = {k: v.value for k, v in described[resource].result().items()}
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART \
                        or time.monotonic() > deadline:
                    raise
                unknown.append(name)
        if unknown:
            time.sleep(0.5)
        pending = unknown
    return found


def wait_for_leaders(admin: AdminClient, names: Iterable[str], timeout: float = 30.0) -> None:
    """Returns once every partition of every named topic has a leader: a consumer that
    subscribes (or a group leader that assigns) earlier does not see the topic yet."""
    waiting = set(names)
    deadline = time.monotonic() + timeout
    while True:
        topics = admin.list_topics(timeout=10).topics
        waiting = {name for name in waiting
                   if name not in topics or topics[name].error is not None
                   or not topics[name].partitions
                   or any(p.leader < 0 for p in topics[name].partitions.values())}
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"no leader for every partition after {timeout:.0f} s: "
                               f"{', '.join(sorted(waiting))}")
        time.sleep(0.2)
