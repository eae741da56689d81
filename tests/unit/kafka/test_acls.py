"""The ACL derivation (app/kafka/acls.py), branch by branch, against the real topics/."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.kafka import acls as a
from app.kafka.topics import TopicSpec, load_topic_specs
from app.settings import Settings

REPO = Path(__file__).resolve().parents[3]
SPECS = load_topic_specs(REPO / "topics")
NAMING = a.Naming(topic_prefix="p.", app_id="rec")
BILLING = a.Service("User:billing", "billing")
SHIPPING = a.Service("User:shipping", "shipping")

Grant = tuple[str, str, str, str]  # resource type, pattern type, name, operation


def grants(bindings: list[a.Binding], principal: str) -> set[Grant]:
    return {(b.resource_type, b.pattern_type, b.name, b.operation)
            for b in bindings if b.principal == principal}


def on(bindings: list[a.Binding], principal: str, name: str) -> set[str]:
    return {op for rt, _, n, op in grants(bindings, principal) if n == name and rt == a.TOPIC}


def plan(**principals: object) -> list[a.Binding]:
    return a.derive(SPECS, NAMING, a.Principals(**principals))  # type: ignore[arg-type]


def topic(name: str, *ops: str) -> set[Grant]:
    return {(a.TOPIC, a.LITERAL, name, op) for op in ops}


# ---- every principal ---------------------------------------------------------------------

def test_every_topic_of_topics_dir_has_a_declared_worker_use() -> None:
    use = a.worker_topic_use(SPECS)
    assert set(use) == {s.name for s in SPECS}


def test_a_topic_without_a_rule_is_refused_rather_than_granted_by_default() -> None:
    with pytest.raises(a.UnclassifiedTopic, match="recovery.new-thing"):
        a.derive([*SPECS, TopicSpec("recovery.new-thing", 3, 3)], NAMING,
                 a.Principals(worker="User:w"))


def test_nothing_is_broader_than_a_literal_name_or_the_app_id_prefix() -> None:
    bindings = plan(worker="User:w", services=(BILLING, SHIPPING), operator="User:ops",
                    replay_targets=("orders",), worker_targets=("orders",))
    assert bindings == sorted(set(bindings))  # sorted, no duplicates
    for b in bindings:
        assert "*" not in b.name and b.name
        assert b.permission == a.ALLOW and b.host == "*"
        assert b.operation not in ("ALL", "ALTER", "DELETE", "CLUSTER_ACTION")
        assert b.resource_type != a.CLUSTER  # Kafka 4.x: idempotence needs WRITE on a topic
        assert b.pattern_type == a.LITERAL or (b.principal, b.resource_type, b.name) == (
            "User:w", a.TOPIC, "rec-")
        assert b.why


def test_no_principal_means_no_binding() -> None:
    assert plan() == []


# ---- the worker --------------------------------------------------------------------------

def test_worker_reads_its_inputs_and_writes_its_outputs_under_the_prefix() -> None:
    bindings = plan(worker="User:w")
    for name in ("recovery.failures", "recovery.incident-commands", "recovery.heartbeats",
                 "recovery.retry.1s", "recovery.retry.2s", "recovery.retry.4s",
                 "recovery.retry.30s"):
        assert on(bindings, "User:w", f"p.{name}") == {a.READ, a.WRITE, a.DESCRIBE}, name
    for name in ("recovery.control", "recovery.audit", "recovery.cache-control",
                 "recovery.tool-queries"):
        assert on(bindings, "User:w", f"p.{name}") == {a.WRITE, a.DESCRIBE}, name
    assert on(bindings, "User:w", "p.recovery.partition-state") == {a.READ, a.DESCRIBE}
    # the dead letters: written, and read back by the automatic replay and the console
    assert on(bindings, "User:w", "p.recovery.dlq") == {a.READ, a.WRITE, a.DESCRIBE}
    # written, and read by the console: an incident's history, the poison list, and the
    # progress of replays started from the page
    for name in ("recovery.events", "recovery.poison", "recovery.replay-progress"):
        assert on(bindings, "User:w", f"p.{name}") == {a.READ, a.WRITE, a.DESCRIBE}, name
    assert not any(b.name.startswith("recovery.") for b in bindings)  # the prefix is applied


def test_worker_owns_the_topics_named_after_its_app_id_and_its_group() -> None:
    mine = grants(plan(worker="User:w"), "User:w")
    assert {(rt, pt, n, op) for rt, pt, n, op in mine if pt == a.PREFIXED} == {
        (a.TOPIC, a.PREFIXED, "rec-", op) for op in
        (a.CREATE, a.DESCRIBE, a.DESCRIBE_CONFIGS, a.ALTER_CONFIGS, a.READ, a.WRITE)}
    assert {g for g in mine if g[0] == a.GROUP} == {
        (a.GROUP, a.LITERAL, "rec", a.READ), (a.GROUP, a.LITERAL, "rec", a.DESCRIBE)}
    assert not any(g[0] == a.TRANSACTIONAL_ID for g in mine)
    # creating a recovery topic is `recovery topics apply`'s job, done by an administrator
    assert not any(op == a.CREATE for rt, pt, n, op in mine if pt == a.LITERAL)


def test_worker_redelivers_to_each_service_and_watches_its_group_without_joining_it() -> None:
    mine = grants(plan(worker="User:w", services=(BILLING,)), "User:w")
    assert topic("billing.redelivery", a.WRITE, a.DESCRIBE) <= mine
    assert (a.TOPIC, a.LITERAL, "billing.redelivery", a.READ) not in mine
    assert (a.GROUP, a.LITERAL, "billing", a.DESCRIBE) in mine
    assert (a.GROUP, a.LITERAL, "billing", a.READ) not in mine


def test_worker_targets_are_written_literal_with_their_limit_read_and_no_wildcard() -> None:
    added = grants(plan(worker="User:w", worker_targets=("orders",)), "User:w") - \
        grants(plan(worker="User:w"), "User:w")
    assert added == topic("orders", a.WRITE, a.DESCRIBE, a.DESCRIBE_CONFIGS)
    for bad in ("orders*", "", " orders"):
        with pytest.raises(ValueError, match="literal topic name"):
            plan(worker="User:w", worker_targets=(bad,))


def test_exactly_once_adds_the_transactional_ids_and_nothing_else() -> None:
    eos = a.Naming(topic_prefix="p.", app_id="rec", exactly_once=True)
    with_eos = grants(a.derive(SPECS, eos, a.Principals(worker="User:w")), "User:w")
    without = grants(plan(worker="User:w"), "User:w")
    assert with_eos - without == {(a.TRANSACTIONAL_ID, a.PREFIXED, "rec-", a.WRITE),
                                  (a.TRANSACTIONAL_ID, a.PREFIXED, "rec-", a.DESCRIBE)}


def test_creating_missing_topics_adds_create_on_the_defined_topics_only() -> None:
    creating = a.Naming(topic_prefix="p.", app_id="rec", create_missing_topics=True)
    added = grants(a.derive(SPECS, creating, a.Principals(worker="User:w")), "User:w") - \
        grants(plan(worker="User:w"), "User:w")
    assert added and all(op == a.CREATE and pt == a.LITERAL and n.startswith("p.recovery.")
                         for _, pt, n, op in added)


def test_naming_comes_from_the_settings() -> None:
    settings = Settings(topic_prefix="t1.", app_id="svc", processing_guarantee="exactly_once")
    naming = a.Naming.of(settings)
    assert (naming.topic_prefix, naming.app_id, naming.exactly_once) == ("t1.", "svc", True)
    assert naming.topic("recovery.dlq") == settings.topic("recovery.dlq")


# ---- a service ---------------------------------------------------------------------------

def test_a_service_gets_exactly_its_reports_its_commands_and_its_own_redeliveries() -> None:
    assert grants(plan(services=(BILLING,)), "User:billing") == (
        topic("p.recovery.failures", a.WRITE, a.DESCRIBE)
        | topic("p.recovery.heartbeats", a.WRITE, a.DESCRIBE)
        | topic("p.recovery.incident-commands", a.WRITE, a.DESCRIBE)
        | topic("p.recovery.control", a.READ, a.DESCRIBE)
        | topic("billing.redelivery", a.READ, a.DESCRIBE, a.CREATE)
        | {(a.GROUP, a.LITERAL, "billing", a.READ), (a.GROUP, a.LITERAL, "billing", a.DESCRIBE)})


def test_a_service_gets_nothing_of_another_service_nor_of_the_dead_letters() -> None:
    bindings = plan(worker="User:w", services=(BILLING, SHIPPING), operator="User:ops")
    billing = grants(bindings, "User:billing")
    assert not any("shipping" in name for _, _, name, _ in billing)
    for name in ("p.recovery.dlq", "p.recovery.poison", "p.recovery.events",
                 "p.recovery.replay-progress"):
        assert on(bindings, "User:billing", name) == set()
    assert on(bindings, "User:billing", "p.recovery.failures") == {a.WRITE, a.DESCRIBE}


def test_the_redelivery_topic_is_named_as_the_client_api_names_it() -> None:
    bindings = a.derive(SPECS, NAMING, a.Principals(services=(BILLING,)),
                        redelivery_of=lambda group: f"{group}.again")
    assert on(bindings, "User:billing", "billing.again") == {a.READ, a.DESCRIBE, a.CREATE}


def test_a_service_needs_the_topics_it_writes_to_be_defined() -> None:
    without_control = [s for s in SPECS if s.name != "recovery.control"]
    with pytest.raises(a.UnclassifiedTopic, match="recovery.control"):
        a.derive(without_control, NAMING, a.Principals(services=(BILLING,)))


# ---- the operator ------------------------------------------------------------------------

def test_the_operator_reads_dead_letters_and_poison_and_replays_to_redelivery_topics() -> None:
    assert grants(plan(operator="User:ops", services=(BILLING,)), "User:ops") == (
        topic("p.recovery.dlq", a.READ, a.DESCRIBE)
        | topic("p.recovery.poison", a.READ, a.DESCRIBE)
        | topic("p.recovery.replay-progress", a.READ, a.WRITE, a.DESCRIBE)
        | topic("billing.redelivery", a.WRITE, a.DESCRIBE))


def test_named_replay_targets_are_written_literal_and_a_wildcard_is_refused() -> None:
    ops = grants(plan(operator="User:ops", replay_targets=("orders",)), "User:ops")
    assert topic("orders", a.WRITE, a.DESCRIBE) <= ops
    assert not any(g[0] == a.GROUP for g in ops)  # replay assigns; it joins no group
    with pytest.raises(ValueError, match="literal"):
        plan(operator="User:ops", replay_targets=("orders*",))


# ---- parsing, comparing, printing --------------------------------------------------------

@pytest.mark.parametrize("text", ["billing", "User:", ":x", "User:*", "*:x"])
def test_a_principal_must_be_a_named_type_and_name(text: str) -> None:
    with pytest.raises(ValueError, match="principal"):
        a.validate_principal(text)


def test_a_service_is_a_principal_and_a_literal_group() -> None:
    assert a.parse_service("User:billing=billing-group") == a.Service("User:billing",
                                                                      "billing-group")
    for bad in ("User:billing", "User:billing=", "=g", "User:billing=*", "billing=g"):
        with pytest.raises(ValueError):
            a.parse_service(bad)


def test_compare_splits_missing_present_and_drift_of_the_planned_principals_only() -> None:
    wanted = plan(services=(BILLING,))
    extra = a.Binding("User:billing", a.TOPIC, a.LITERAL, "orders", a.READ, why="")
    someone_else = a.Binding("User:x", a.TOPIC, a.LITERAL, "orders", a.READ)
    # the reason is not part of a binding's identity: the broker keeps none
    there = [a.Binding(*wanted[0].key), extra, someone_else]
    result = a.compare(wanted, there)
    assert result.present == [wanted[0]]
    assert result.missing == wanted[1:]
    assert result.drift == [extra]


def test_the_table_has_a_header_and_one_aligned_row_per_binding() -> None:
    bindings = plan(services=(BILLING,))
    lines = a.table(bindings)
    assert lines[0].split()[:6] == ["PRINCIPAL", "RESOURCE", "PATTERN", "NAME", "OPERATION",
                                    "PERMISSION"]
    assert len(lines) == len(bindings) + 1
    column = lines[0].index("NAME")
    assert all(line[column - 2:column] == "  " for line in lines)
    assert bindings[0].to_json()["principal"] == "User:billing"
