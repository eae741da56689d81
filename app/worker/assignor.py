"""Faust's partition assignor, not failing on a changelog the leader's metadata lacks.

Faust's assignor gives every member all partitions of each global table's changelog and
looks their number up in the leader's metadata without a default: when that metadata does
not list the changelog yet, it raises a KeyError, aiokafka turns it into an error for the
consumer to poll, and waits for that poll. Faust never polls without an assignment, so the
worker stays in its group with nothing assigned until it is restarted. Seen on a fresh
three-broker cluster: the changelogs had leaders (app/kafka/changelogs.py waits for them),
but the broker the leader's metadata came from did not list any of the worker's topics yet
("Ignoring missing topic" for every one of them), and the clean-clone CI's short fault run
waited three minutes for an assignment that never came.

Here such a changelog counts as having no partitions yet: the member's assignment goes on
without it, and when the metadata lists it, aiokafka sees the change and the group
rebalances again (the leader watches its subscription's partition counts).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from faust.assignor import PartitionAssignor

log = logging.getLogger(__name__)


class MetadataTolerantAssignor(PartitionAssignor):  # type: ignore[misc]
    def _global_table_standby_assignments(self, assignments: Any,
                                          partitions_by_topic: Mapping[str, int]) -> Any:
        known = dict(partitions_by_topic)
        for table in self._table_manager.data.values():
            if not table.is_global:
                continue
            name = table._changelog_topic_name()
            if known.get(name) is None:
                log.warning("the group leader's metadata does not list %s yet; assigning "
                            "without it (the group rebalances again when it is listed)", name)
                known[name] = 0
        return super()._global_table_standby_assignments(assignments, known)
