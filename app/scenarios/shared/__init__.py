"""What the scenarios share on one worker: the deadline watches (tool discovery, cache
repair, network partitions, coordinated recovery) and the tool registry (MCP connection
loss, tool discovery). Each is made once per Faust app, by the first scenario that asks for
it, so its agents, tables and timer are registered once."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from app.scenarios.shared.tool_registry import ToolRegistry
from app.scenarios.shared.watches import Watches

if TYPE_CHECKING:
    import faust

    from app.pipeline.strategy import StrategyServices


class SharedServices:
    """The shared scenario services of one app, each made on first use."""

    def __init__(self, app: faust.App, services: StrategyServices):
        self.app = app
        self.services = services
        self._watches: Watches | None = None
        self._tool_registry: ToolRegistry | None = None

    @property
    def watches(self) -> Watches:
        if self._watches is None:
            self._watches = Watches(self.app, self.services)
        return self._watches

    @property
    def tool_registry(self) -> ToolRegistry:
        if self._tool_registry is None:
            self._tool_registry = ToolRegistry(self.app, self.services)
        return self._tool_registry


_BY_APP: weakref.WeakKeyDictionary[faust.App, SharedServices] = weakref.WeakKeyDictionary()


def shared(app: faust.App, services: StrategyServices) -> SharedServices:
    """The app's shared scenario services (`services` is the worker's one StrategyServices)."""
    found = _BY_APP.get(app)
    if found is None:
        found = _BY_APP[app] = SharedServices(app, services)
    return found
