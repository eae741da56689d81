"""Least-privilege Kafka ACLs for the recovery service's three kinds of principal, derived
from the topic definitions (topics/, app/kafka/topics.py) and the settings' naming. Pure: no
Kafka, no files; `recovery acls plan|apply` (app/cli/acls.py) does the I/O.

- the **worker**: the Faust worker, which reads and writes the recovery topics, keeps its
  tables in changelog topics named after its app id, runs its consumer group (the app id),
  redelivers to each service's redelivery topic and watches the services' groups' lag;
- a **service**: reports failures, sends heartbeats and acknowledgements (incident
  commands), obeys control commands, and reads its own redelivery topic in its own group;
- an **operator**: reads dead letters and poison, and replays dead letters (progress topic,
  the services' redelivery topics and any named replay target).

What each needs was read from the code that uses it (docs/security.md, "Authorization"). A
consumer that only assigns partitions and commits nothing (dead-letter scans, replay, the
control-command reader) needs no group ACL. Kafka 4.x lets an idempotent producer in with
WRITE on any topic (KIP-679), so no CLUSTER ACL is granted to anyone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from app.contracts import topics as t
from app.kafka.topics import TopicSpec
from app.settings import Settings

TOPIC, GROUP, TRANSACTIONAL_ID, CLUSTER = "TOPIC", "GROUP", "TRANSACTIONAL_ID", "CLUSTER"
LITERAL, PREFIXED = "LITERAL", "PREFIXED"
ALLOW = "ALLOW"
READ, WRITE, CREATE, DESCRIBE = "READ", "WRITE", "CREATE", "DESCRIBE"
DESCRIBE_CONFIGS, ALTER_CONFIGS = "DESCRIBE_CONFIGS", "ALTER_CONFIGS"

WORKER, SERVICE, OPERATOR = "worker", "service", "operator"

# What the worker does with each topic of topics/ (logical names; the retry tiers by prefix).
# A topic added to topics/ without an entry here is refused by `derive`: its grant is a
# decision, not a default.
R, W = frozenset({READ}), frozenset({WRITE})
RW = R | W
NONE: frozenset[str] = frozenset()
WORKER_TOPIC_USE: dict[str, frozenset[str]] = {
    t.FAILURES: RW,            # intake; the event-delivery stage reports child failures
    t.COMMANDS: RW,            # intake; the watchdog sends its checks here
    t.EVENTS: RW,              # lifecycle events; the console reads an incident's history
    t.DLQ: RW,                 # dead-letters, and reads them back for the automatic replay
    t.POISON: RW,              # quarantine; the console lists and replays poison
    t.HEARTBEATS: RW,          # consumer health; the health timer's checks go through it
    "recovery.control": W,     # stop / restart in safe mode / resume commands
    "recovery.tool-registry": RW,
    "recovery.state": RW,      # authoritative values (GlobalTable source, merged writes)
    "recovery.audit": W,
    t.REPLAY_PROGRESS: RW,     # replays started from the console (as `recovery replay`)
    "recovery.cache-control": W,
    "recovery.partition-state": R,  # collected on HEALED; written by the services' sides
    t.WATCHES: RW,
    "recovery.coordination": RW,
    "recovery.tool-results": RW,
    "recovery.tool-queries": W,
}


class UnclassifiedTopic(ValueError):
    """A topic of topics/ whose use by the worker is not declared in WORKER_TOPIC_USE."""


@dataclass(frozen=True, order=True)
class Binding:
    principal: str
    resource_type: str
    pattern_type: str
    name: str
    operation: str
    permission: str = ALLOW
    host: str = "*"
    # Why it is granted: shown by `acls plan`, not part of the binding's identity.
    why: str = field(default="", compare=False)

    @property
    def key(self) -> tuple[str, str, str, str, str, str, str]:
        return (self.principal, self.resource_type, self.pattern_type, self.name,
                self.operation, self.permission, self.host)

    def to_json(self) -> dict[str, str]:
        return {"principal": self.principal, "resource_type": self.resource_type,
                "pattern_type": self.pattern_type, "name": self.name,
                "operation": self.operation, "permission": self.permission,
                "host": self.host, "why": self.why}


@dataclass(frozen=True)
class Service:
    """A service principal and the consumer group its RecoveringConsumer runs as."""

    principal: str
    group: str


@dataclass(frozen=True)
class Principals:
    worker: str | None = None
    services: tuple[Service, ...] = ()
    operator: str | None = None
    # Topics an operator may replay to besides the services' redelivery topics
    # (`recovery replay --to original` or `--to-topic`).
    replay_targets: tuple[str, ...] = ()
    # Services' topics the worker re-publishes to: a record reported too large for its
    # topic (its max.message.bytes is read first), alternative and fallback delivery topics.
    worker_targets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Naming:
    """The deployment's names, from the settings: the topic prefix, the Faust app id (its
    consumer group, the prefix of its changelog topics and of its transactional ids)."""

    topic_prefix: str = ""
    app_id: str = "recovery"
    exactly_once: bool = False
    create_missing_topics: bool = False

    @classmethod
    def of(cls, settings: Settings) -> Naming:
        return cls(settings.topic_prefix, settings.app_id,
                   settings.processing_guarantee == "exactly_once",
                   settings.create_missing_topics)

    def topic(self, logical: str) -> str:
        return f"{self.topic_prefix}{logical}"


def validate_principal(text: str) -> str:
    """`Type:name`, e.g. `User:billing`; a wildcard principal is not least privilege."""
    kind, colon, name = text.partition(":")
    if not colon or not kind or not name:
        raise ValueError(f"principal {text!r}: expected TYPE:NAME, e.g. User:billing")
    if name == "*" or kind == "*":
        raise ValueError(f"principal {text!r}: a wildcard principal is not least privilege")
    return text


def parse_service(text: str) -> Service:
    """`User:billing=billing-group`."""
    principal, equals, group = text.rpartition("=")
    if not equals or not principal or not group:
        raise ValueError(f"service {text!r}: expected PRINCIPAL=GROUP, "
                         "e.g. User:billing=billing-group")
    if group.strip() != group or group in ("*", ""):
        raise ValueError(f"service {text!r}: the group must be a literal name")
    return Service(validate_principal(principal), group)


def literal(topic: str, what: str) -> str:
    if not topic or "*" in topic or topic.strip() != topic:
        raise ValueError(f"{what} {topic!r}: a literal topic name is needed")
    return topic


def worker_topic_use(specs: Iterable[TopicSpec]) -> dict[str, frozenset[str]]:
    """Logical topic name -> READ/WRITE the worker needs, for every topic of topics/."""
    use: dict[str, frozenset[str]] = {}
    unknown: list[str] = []
    for spec in specs:
        if spec.name.startswith(t.RETRY_TIER_PREFIX):
            use[spec.name] = RW  # a tier: the worker writes a retry and reads it when due
        elif spec.name in WORKER_TOPIC_USE:
            use[spec.name] = WORKER_TOPIC_USE[spec.name]
        else:
            unknown.append(spec.name)
    if unknown:
        raise UnclassifiedTopic(
            f"no ACL rule for topic(s) {', '.join(unknown)}: declare the worker's use of each "
            "in app/kafka/acls.py WORKER_TOPIC_USE")
    return use


def derive(specs: Sequence[TopicSpec], naming: Naming, principals: Principals,
           redelivery_of: Callable[[str], str] = t.redelivery_topic) -> list[Binding]:
    """Every binding the principals need, sorted and without duplicates. Topic names are
    literal except the worker's own app-id prefix (Faust names its changelog, repartition and
    leader topics, and its transactional ids, `<app id>-...`)."""
    names = {spec.name for spec in specs}
    use = worker_topic_use(specs)
    out: dict[tuple[str, ...], Binding] = {}

    def grant(principal: str, resource: str, pattern: str, name: str,
              operations: Iterable[str], why: str) -> None:
        for operation in operations:
            binding = Binding(principal, resource, pattern, name, operation, why=why)
            out.setdefault(binding.key, binding)

    def need(logical: str) -> str:
        if logical not in names:
            raise UnclassifiedTopic(f"topic {logical} is not defined in topics/")
        return naming.topic(logical)

    redelivery = [(s, redelivery_of(s.group)) for s in principals.services]
    verbs = {READ: "reads", WRITE: "writes"}
    if principals.worker:
        worker = validate_principal(principals.worker)
        for logical, operations in sorted(use.items()):
            if not operations:
                continue
            ops = sorted(operations | {DESCRIBE})
            if naming.create_missing_topics:
                ops.append(CREATE)  # Scenario 3 creates a missing topic from its definition
            grant(worker, TOPIC, LITERAL, naming.topic(logical), ops,
                  f"worker {' and '.join(verbs[o] for o in sorted(operations))} {logical}")
        grant(worker, TOPIC, PREFIXED, f"{naming.app_id}-",
              (CREATE, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS, READ, WRITE),
              "Faust tables' changelogs and the worker's internal topics "
              "(created and aligned by the worker)")
        grant(worker, GROUP, LITERAL, naming.app_id, (READ, DESCRIBE),
              "the worker's consumer group (its app id)")
        if naming.exactly_once:
            grant(worker, TRANSACTIONAL_ID, PREFIXED, f"{naming.app_id}-", (WRITE, DESCRIBE),
                  "exactly_once: Faust's transactional producers <app id>-<group>-<partition>")
        for topic in principals.worker_targets:
            grant(worker, TOPIC, LITERAL, literal(topic, "worker target"),
                  (WRITE, DESCRIBE, DESCRIBE_CONFIGS),
                  "re-published to (message too large, alternative or fallback delivery)")
        for service, topic in redelivery:
            grant(worker, TOPIC, LITERAL, topic, (WRITE, DESCRIBE),
                  f"retries redelivered to {service.group}")
            grant(worker, GROUP, LITERAL, service.group, (DESCRIBE,),
                  f"lag and health of {service.group}")
    for service, topic in redelivery:
        who = validate_principal(service.principal)
        for logical in (t.FAILURES, t.HEARTBEATS, t.COMMANDS):
            grant(who, TOPIC, LITERAL, need(logical), (WRITE, DESCRIBE),
                  {t.FAILURES: "failure reports", t.HEARTBEATS: "heartbeats",
                   t.COMMANDS: "acknowledgements of redeliveries"}[logical])
        grant(who, TOPIC, LITERAL, need("recovery.control"), (READ, DESCRIBE),
              "control commands (stop, safe mode, resume), read without a group")
        grant(who, TOPIC, LITERAL, topic, (READ, DESCRIBE, CREATE),
              "its own redelivery topic (the client API creates it when missing)")
        grant(who, GROUP, LITERAL, service.group, (READ, DESCRIBE), "its own consumer group")
    if principals.operator:
        operator = validate_principal(principals.operator)
        for logical in (t.DLQ, t.POISON):
            grant(operator, TOPIC, LITERAL, need(logical), (READ, DESCRIBE),
                  f"read {logical} (replay, inspection)")
        grant(operator, TOPIC, LITERAL, need(t.REPLAY_PROGRESS), (READ, WRITE, DESCRIBE),
              "replay progress (resumable replays)")
        for service, topic in redelivery:
            grant(operator, TOPIC, LITERAL, topic, (WRITE, DESCRIBE),
                  f"replay to {service.group}'s redelivery topic")
        for topic in principals.replay_targets:
            grant(operator, TOPIC, LITERAL, literal(topic, "replay target"), (WRITE, DESCRIBE),
                  "named replay target")
    return sorted(out.values())


@dataclass(frozen=True)
class Comparison:
    missing: list[Binding]
    present: list[Binding]
    # On the broker for the planned principals, not in the plan.
    drift: list[Binding]


def compare(plan: Sequence[Binding], existing: Iterable[Binding]) -> Comparison:
    have = {b.key: b for b in existing}
    wanted = {b.key for b in plan}
    principals = {b.principal for b in plan}
    return Comparison(
        missing=[b for b in plan if b.key not in have],
        present=[b for b in plan if b.key in have],
        drift=sorted(b for k, b in have.items() if k not in wanted and b.principal in principals))


def table(bindings: Sequence[Binding]) -> list[str]:
    """The bindings as aligned text lines, with a header."""
    header = ("PRINCIPAL", "RESOURCE", "PATTERN", "NAME", "OPERATION", "PERMISSION", "WHY")
    rows = [header] + [(b.principal, b.resource_type, b.pattern_type, b.name, b.operation,
                        b.permission, b.why) for b in bindings]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)),
                       row[-1]]).rstrip() for row in rows]
