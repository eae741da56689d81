"""Whether a topic exists, asked of the cluster before the worker sends to a topic it does not
own (a consumer's redelivery topic, a tool server's request topic). Sending to a missing
topic with auto-creation off would hold the sending agent until the producer gives up, and
every record behind it would wait too."""

from __future__ import annotations

import asyncio
from typing import Any

from confluent_kafka.admin import AdminClient


class TopicPresence:
    def __init__(self, admin_config: dict[str, Any]):
        self._config = admin_config
        self._admin: AdminClient | None = None
        self._known: set[str] = set()

    def _lookup(self, topic: str) -> bool:
        if self._admin is None:
            self._admin = AdminClient(self._config)
        found = self._admin.list_topics(topic, timeout=10).topics.get(topic)
        return found is not None and found.error is None and bool(found.partitions)

    async def exists(self, topic: str) -> bool:
        """Topics seen once are remembered (topics are not deleted under a running service);
        a missing one is asked about again next time, so creating it later is enough."""
        if topic in self._known:
            return True
        present = await asyncio.get_running_loop().run_in_executor(None, self._lookup, topic)
        if present:
            self._known.add(topic)
        return present
