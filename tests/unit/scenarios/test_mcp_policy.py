"""Policy data of Scenarios 1-3: defaults from app/policies/defaults.toml, overridden key by
key by RECOVERY_POLICY_FILE, bad entries refused with the entry named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.policy.routing import Fallback, load_scenario_policies
from app.policy.rules import PolicyError


def test_defaults_follow_the_source() -> None:
    p = load_scenario_policies()
    assert p.mcp.recommended_action == "manual_intervention"
    assert p.mcp.alternatives == {} and p.mcp.fallbacks == {}
    assert p.mcp.topic_of("mcp-a") == "mcp-a.requests"
    assert [pattern for pattern, _ in p.discovery.wrappers] == [
        "get_*", "set_*", "calculate_*", "send_*"]
    assert p.discovery.wrapper_for("calculate_tax") == ("calculate_*", "calculator")
    assert p.discovery.wrapper_for("tax") is None
    assert p.delivery.redelivery_of("billing") == "billing.redelivery"
    assert p.delivery.fallback_for("orders") is None


def test_override_file_adds_and_replaces_key_by_key(tmp_path: Path) -> None:
    override = tmp_path / "policy.toml"
    override.write_text("""
[scenario.mcp]
cache_max_age_ms = 60000
[scenario.mcp.alternatives]
get_weather = ["mcp-b", "mcp-c"]
[scenario.mcp.servers]
mcp-c = "c.requests"
[scenario.mcp.fallbacks]
get_weather = { result = { temp = 0 } }
get_news = { topic = "news-lite.requests" }
[scenario.mcp.protocol_compatibility]
"2025-03-26" = ["2024-11-05"]
[scenario.discovery]
query_timeout_ms = 1000
[scenario.discovery.wrapper_topics]
getter = "getters"
[scenario.delivery.alternative_delivery]
billing = "billing.webhook"
[scenario.delivery.fallback_topics]
"*" = "parking"
""")
    p = load_scenario_policies(override)
    assert p.mcp.cache_max_age_ms == 60000
    assert p.mcp.reply_header == "reply-to"  # untouched default
    assert p.mcp.alternatives == {"get_weather": ("mcp-b", "mcp-c")}
    assert p.mcp.topic_of("mcp-c") == "c.requests"
    assert p.mcp.topic_of("mcp-b", "b.own") == "b.own"
    assert p.mcp.fallbacks == {"get_weather": Fallback(result={"temp": 0}),
                               "get_news": Fallback(topic="news-lite.requests")}
    assert p.mcp.protocol_compatibility == {"2025-03-26": ("2024-11-05",)}
    assert p.discovery.query_timeout_ms == 1000
    assert p.discovery.confirmation_timeout_ms == 300_000
    assert p.discovery.wrapper_topics == {"getter": "getters"}
    assert p.delivery.alternative_delivery == {"billing": "billing.webhook"}
    assert p.delivery.fallback_for("anything") == "parking"


@pytest.mark.parametrize(("text", "message"), [
    ("[scenario.mcp]\nbogus = 1\n", "scenario.mcp: unknown settings ['bogus']"),
    ("[scenario.mcp.fallbacks]\nt = { topic = 'a', result = 1 }\n", "exactly one of"),
    ("[scenario.mcp.fallbacks]\nt = {}\n", "exactly one of"),
    ("[scenario.mcp.alternatives]\nt = 'mcp-b'\n", "table of string lists"),
    ("[scenario.discovery]\nmin_similarity = 2\n", "between 0 and 1"),
    ("[scenario.discovery]\nwrappers = ['get_*']\n", "{pattern, kind}"),
    ("[scenario.delivery.fallback_topics]\norders = 3\n", "table of strings"),
    ("[scenario.delivery\n", "policy.toml"),
])
def test_bad_entries_are_refused_with_the_entry_named(tmp_path: Path, text: str,
                                                      message: str) -> None:
    override = tmp_path / "policy.toml"
    override.write_text(text)
    with pytest.raises(PolicyError, match=re.escape(message)):
        load_scenario_policies(override)
