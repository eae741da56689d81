from pathlib import Path

import pytest

from app.pipeline.classify import FALLBACK, Classification, classify
from app.policy.rules import PolicyError, load_policies

RULES = load_policies().rules


@pytest.mark.parametrize(
    ("kind", "error_type", "expected"),
    [
        ("MCP_CONNECTION_LOST", "network_timeout",
         Classification("ERROR", "transient", "network_timeout", "recoverable")),
        ("MCP_CONNECTION_LOST", "authentication_failure",
         Classification("CRITICAL", "security", "authentication", "non_recoverable")),
        ("MCP_CONNECTION_LOST", "protocol_mismatch",
         Classification("CRITICAL", "configuration", "protocol_version", "partially_recoverable")),
        ("MCP_CONNECTION_LOST", "socket_reset",
         Classification("ERROR", "unknown", "connection_failure", "partially_recoverable")),
        ("EVENT_DELIVERY_FAILED", "consumer_unavailable",
         Classification("ERROR", "transient", "consumer_unavailable", "recoverable")),
        ("EVENT_DELIVERY_FAILED", "message_too_large",
         Classification("ERROR", "configuration", "message_size_limit", "recoverable")),
        ("EVENT_DELIVERY_FAILED", "topic_not_found",
         Classification("CRITICAL", "configuration", "topic_configuration",
                        "partially_recoverable")),
        ("EVENT_DELIVERY_FAILED", "broker_hiccup",
         Classification("ERROR", "unknown", "delivery_failure", "partially_recoverable")),
        ("UNKNOWN", "something_else", Classification("ERROR", "unknown", "unknown",
                                                     "partially_recoverable")),
    ],
)
def test_source_document_rules(kind: str, error_type: str, expected: Classification) -> None:
    assert classify(RULES, kind=kind, error_type=error_type) == expected


@pytest.mark.parametrize(
    ("reported", "severity", "recoverability"),
    [("FATAL", "FATAL", "non_recoverable"), ("critical", "CRITICAL", "non_recoverable"),
     ("ERROR", "ERROR", "recoverable"), ("WARNING", "WARNING", "recoverable"),
     (None, "ERROR", "recoverable"), ("bogus", "ERROR", "recoverable")],
)
def test_consumer_crash_keeps_the_reported_severity(
    reported: str | None, severity: str, recoverability: str
) -> None:
    found = classify(RULES, kind="CONSUMER_CRASHED", error_type="handler_exception",
                     reported_severity=reported)
    assert (found.severity, found.recoverability, found.type) == (
        severity, recoverability, "consumer_crash")


def test_empty_rule_set_falls_back_to_the_documented_default() -> None:
    assert classify((), kind="X", error_type="y") == FALLBACK


def test_override_file_rules_come_first_and_retry_entries_replace(tmp_path: Path) -> None:
    override = tmp_path / "policy.toml"
    override.write_text(
        '[[classification]]\nerror_types = ["network_timeout"]\nseverity = "WARNING"\n'
        'category = "transient"\ntype = "flaky_net"\nrecoverability = "recoverable"\n'
        '[retry.flaky_net]\nattempts = 5\nbackoff = "fixed"\ninitial_ms = 250\n'
    )
    policies = load_policies(override)
    found = classify(policies.rules, kind="MCP_CONNECTION_LOST", error_type="network_timeout")
    assert found.type == "flaky_net" and found.severity == "WARNING"
    assert policies.retry_for("flaky_net").attempts == 5
    assert policies.retry_for("authentication").attempts == 0  # defaults still there


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[classification]]\nseverity = "LOUD"\ncategory = "c"\ntype = "t"\n'
         'recoverability = "recoverable"\n', "severity"),
        ('[[classification]]\nseverity = "ERROR"\ncategory = "c"\ntype = "t"\n', "lacks"),
        ('[retry.x]\nattempts = 2\nbounce = 1\n', "unknown retry settings"),
        ('[retry.x]\non_exhausted = "shrug"\n', "on_exhausted"),
        ("not toml [", "policy.toml"),
    ],
)
def test_bad_policy_files_are_refused_with_the_entry_named(
    tmp_path: Path, text: str, message: str
) -> None:
    override = tmp_path / "policy.toml"
    override.write_text(text)
    with pytest.raises(PolicyError, match=message):
        load_policies(override)
