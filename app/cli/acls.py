"""`recovery acls plan|apply`: least-privilege ACLs for the worker, the services and an
operator, derived from topics/ (app/kafka/acls.py). `apply` creates what is missing, reports
what is there, never deletes, and reports other ACLs of those principals as drift."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from app.cli.common import UsageFailure, admin, cluster_size
from app.cli.replay import OneLineCommand
from app.settings import get_settings


def principal_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed((
        click.option("--worker", metavar="PRINCIPAL",
                     help="The worker's principal, e.g. User:recovery-worker."),
        click.option("--service", "services", multiple=True, metavar="PRINCIPAL=GROUP",
                     help="A service principal and its consumer group, e.g. "
                          "User:billing=billing (repeatable)."),
        click.option("--operator", metavar="PRINCIPAL",
                     help="The operator's principal (reads dead letters and poison, "
                          "replays), e.g. User:ops."),
        click.option("--replay-target", "replay_targets", multiple=True, metavar="TOPIC",
                     help="A topic the operator may replay to besides the services' "
                          "redelivery topics (repeatable)."),
        click.option("--worker-target", "worker_targets", multiple=True, metavar="TOPIC",
                     help="A service's topic the worker may re-publish to (a record "
                          "reported too large, alternative or fallback delivery; "
                          "repeatable)."),
    )):
        command = option(command)
    return command


def build_plan(worker: str | None, services: tuple[str, ...], operator: str | None,
               replay_targets: tuple[str, ...], worker_targets: tuple[str, ...]) -> list[Any]:
    from app.kafka.acls import Naming, Principals, derive, parse_service
    from app.kafka.topics import load_topic_specs

    if replay_targets and not operator:
        raise UsageFailure("--replay-target needs --operator")
    if worker_targets and not worker:
        raise UsageFailure("--worker-target needs --worker")
    if not (worker or services or operator):
        raise UsageFailure("name at least one principal: --worker, --service or --operator")
    settings = get_settings()
    try:
        parsed = tuple(parse_service(text) for text in services)
        groups = [s.group for s in parsed]
        if len(set(groups)) != len(groups):
            raise ValueError("each --service needs its own group")
        principals = Principals(worker, parsed, operator, replay_targets, worker_targets)
        return derive(load_topic_specs(settings.topics_dir), Naming.of(settings), principals)
    except ValueError as exc:
        raise UsageFailure(str(exc)) from None


@click.group()
def acls() -> None:
    """Least-privilege ACLs derived from topics/."""


@acls.command("plan", cls=OneLineCommand)
@principal_options
@click.option("--json", "as_json", is_flag=True, help="One JSON array of bindings.")
def acls_plan(worker: str | None, services: tuple[str, ...], operator: str | None,
              replay_targets: tuple[str, ...], worker_targets: tuple[str, ...],
              as_json: bool) -> None:
    """Print the ACL bindings the principals need; asks no broker."""
    from app.kafka.acls import table

    plan = build_plan(worker, services, operator, replay_targets, worker_targets)
    if as_json:
        click.echo(json.dumps([b.to_json() for b in plan], indent=2))
        return
    for line in table(plan):
        click.echo(line)
    click.echo(f"{len(plan)} bindings for {len({b.principal for b in plan})} principal(s)")


@acls.command("apply", cls=OneLineCommand)
@principal_options
@click.option("--dry-run", is_flag=True, help="Report what would be created; create nothing.")
def acls_apply(worker: str | None, services: tuple[str, ...], operator: str | None,
               replay_targets: tuple[str, ...], worker_targets: tuple[str, ...],
              dry_run: bool) -> None:
    """Create the missing bindings; report those present and, as drift, other bindings of
    the same principals. Never deletes."""
    from app.kafka.acls import compare

    plan = build_plan(worker, services, operator, replay_targets, worker_targets)
    cluster_size()
    client = admin()
    principals = sorted({b.principal for b in plan})
    try:
        refused = missing_cluster_rights(client, dry_run)
        if refused:
            # A principal without DESCRIBE on the cluster is answered with no ACLs at all
            # rather than a refusal: asking first keeps a dry run from reporting everything
            # as missing.
            raise click.ClickException(
                f"this principal lacks {' and '.join(refused)} on the cluster, which "
                "reading and creating ACLs need; run it as a super user")
        existing = [b for p in principals for b in described(client, p)]
        comparison = compare(plan, existing)
        if comparison.missing and not dry_run:
            create(client, comparison.missing)
    except click.ClickException:
        raise
    except Exception as exc:  # a refusal (not a super user), a timeout: one plain line
        raise click.ClickException(f"ACLs could not be applied: {one_line(exc)}") from None
    verb = "would create" if dry_run else "created"
    for binding in comparison.missing:
        click.echo(f"{verb} {describe(binding)}")
    for binding in comparison.present:
        click.echo(f"present {describe(binding)}")
    for binding in comparison.drift:
        click.echo(f"drift: {describe(binding)} (on the broker, not in the plan)")
    click.echo(f"{len(comparison.missing)} {verb}, {len(comparison.present)} present, "
               f"{len(comparison.drift)} drifted")


def describe(binding: Any) -> str:
    return (f"{binding.principal} {binding.operation} {binding.resource_type}"
            f" {binding.pattern_type.lower()} {binding.name} ({binding.permission.lower()})")


def one_line(exc: Exception) -> str:
    from confluent_kafka import KafkaError

    error = exc.args[0] if exc.args else None
    if isinstance(error, KafkaError):
        if error.name().endswith("AUTHORIZATION_FAILED"):
            # the broker's own text here is a dump of the forwarded request
            return (f"{error.name()}: this principal may not describe or create ACLs; run "
                    "it as a super user (or with DESCRIBE and ALTER on the cluster)")
        return f"{error.name()}: {' '.join(error.str().split())[:300]}"
    return " ".join(str(exc).split())[:300]


def missing_cluster_rights(client: Any, dry_run: bool, timeout: float = 30) -> list[str]:
    """The cluster operations this principal lacks for `apply` (DESCRIBE to read ACLs,
    ALTER to create them), as the broker reports them."""
    from confluent_kafka.admin import AclOperation

    cluster = client.describe_cluster(include_authorized_operations=True,
                                      request_timeout=timeout).result(timeout + 5)
    # librdkafka gives None for an empty set (Kafka 4.x brokers always answer the question)
    allowed = set(cluster.authorized_operations or ())
    if AclOperation.ALL in allowed:
        return []
    wanted = [AclOperation.DESCRIBE] + ([] if dry_run else [AclOperation.ALTER])
    return [op.name for op in wanted if op not in allowed]


# confluent-kafka names the cluster resource BROKER.
_RESOURCE_NAMES = {"BROKER": "CLUSTER"}


def described(client: Any, principal: str, timeout: float = 30) -> list[Any]:
    """The bindings on the broker for one principal, as app.kafka.acls Bindings."""
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    from app.kafka.acls import Binding

    wanted = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, principal, None,
                              AclOperation.ANY, AclPermissionType.ANY)
    found = client.describe_acls(wanted, request_timeout=timeout).result(timeout + 5)
    return [Binding(b.principal, _RESOURCE_NAMES.get(b.restype.name, b.restype.name),
                    b.resource_pattern_type.name, b.name, b.operation.name,
                    b.permission_type.name, b.host) for b in found]


def create(client: Any, bindings: list[Any], timeout: float = 30) -> None:
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    kafka = [AclBinding(ResourceType["BROKER" if b.resource_type == "CLUSTER"
                                     else b.resource_type],
                        b.name, ResourcePatternType[b.pattern_type], b.principal, b.host,
                        AclOperation[b.operation], AclPermissionType[b.permission])
             for b in bindings]
    for future in client.create_acls(kafka, request_timeout=timeout).values():
        future.result(timeout + 5)
