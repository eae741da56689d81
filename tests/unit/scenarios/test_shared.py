"""The services the scenarios share (app/scenarios/shared): one of each per Faust app."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import faust

from app.scenarios.shared import shared
from app.settings import Settings


def test_each_app_has_one_watches_and_one_tool_registry() -> None:
    services: Any = SimpleNamespace(settings=Settings(topic_prefix="t."))
    app = faust.App("shared-a", autodiscover=False)
    other = faust.App("shared-b", autodiscover=False)
    first = shared(app, services)
    assert shared(app, services) is first
    assert first.watches is shared(app, services).watches
    assert first.tool_registry is first.tool_registry
    assert first.watches.topic_name == "t.recovery.watches"
    assert shared(other, services) is not first
