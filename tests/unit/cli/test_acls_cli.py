"""`recovery acls plan` output and the one-line refusals of bad flags (no broker needed:
`plan` asks none, and `apply` checks its flags before it connects)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from app.cli.main import cli
from app.settings import get_settings


@pytest.fixture(autouse=True)
def prefixed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("RECOVERY_TOPIC_PREFIX", "p.")
    monkeypatch.setenv("RECOVERY_APP_ID", "rec")
    # a broker nobody listens on: a test that reached it would fail, not pass by chance
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["acls", *args])
    return result.exit_code, result.stdout, result.stderr


def test_plan_prints_a_table_and_a_count() -> None:
    code, out, _ = run("plan", "--service", "User:billing=billing", "--operator", "User:ops")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("PRINCIPAL")
    assert any(line.split()[:5] == ["User:billing", "TOPIC", "LITERAL", "p.recovery.failures",
                                    "WRITE"] for line in lines)
    assert lines[-1] == f"{len(lines) - 2} bindings for 2 principal(s)"


def test_plan_json_is_the_bindings_with_their_reasons() -> None:
    code, out, _ = run("plan", "--worker", "User:w", "--json")
    assert code == 0
    bindings = json.loads(out)
    assert {b["principal"] for b in bindings} == {"User:w"}
    assert {"resource_type": "GROUP", "pattern_type": "LITERAL", "name": "rec",
            "operation": "READ"}.items() <= next(
        b for b in bindings if b["resource_type"] == "GROUP" and b["operation"] == "READ"
    ).items()
    assert all(b["why"] for b in bindings)


@pytest.mark.parametrize(("args", "message"), [
    (("plan",), "name at least one principal"),
    (("apply",), "name at least one principal"),
    (("plan", "--service", "User:billing"), "expected PRINCIPAL=GROUP"),
    (("plan", "--worker", "recovery-worker"), "expected TYPE:NAME"),
    (("apply", "--operator", "User:*"), "wildcard principal"),
    (("plan", "--replay-target", "orders"), "--replay-target needs --operator"),
    (("apply", "--worker-target", "orders"), "--worker-target needs --worker"),
    (("plan", "--worker", "User:w", "--worker-target", "*"), "literal topic name"),
    (("plan", "--operator", "User:ops", "--replay-target", "o*"), "literal topic name"),
    (("plan", "--service", "User:a=g", "--service", "User:b=g"), "its own group"),
    (("plan", "--nonsense"), "No such option"),
    (("apply", "--worker"), "requires an argument"),
])
def test_bad_flags_are_one_plain_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    code, out, err = run(*args)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
