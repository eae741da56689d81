"""The worker's table changelog topics, created (and visible with a leader for every
partition) before the worker joins its group.

Faust creates them itself at start-up, just before the consumer joins the group; when the
group leader's metadata does not list a just-created changelog of a global table yet, Faust's
assignor fails on it (a KeyError in ``_global_table_standby_assignments``), aiokafka hands
that error to a consumer that will never poll for it, and the worker stays in its group
without an assignment, doing nothing (seen under SASL_SSL: docs/exactly-once.md).
"""

from __future__ import annotations

from typing import Any

from confluent_kafka.admin import AdminClient

from app.kafka.config import admin_config
from app.kafka.topics import TopicSpec, apply_topics, wait_for_leaders
from app.settings import Settings


def cleanup_policy(table: Any) -> str:
    compacting, deleting = table._changelog_compacting, table._changelog_deleting
    if compacting and deleting:
        return "compact,delete"
    return "delete" if deleting else "compact"


def changelog_specs(app: Any) -> list[TopicSpec]:
    """What Faust would create for each table of ``app``."""
    conf = app.conf
    return [TopicSpec(table.changelog_topic.get_topic_name(),
                      table.partitions or conf.topic_partitions,
                      conf.topic_replication_factor,
                      {"cleanup.policy": cleanup_policy(table)})
            for table in app.tables.values()]


def ensure_changelogs(app: Any, settings: Settings, timeout: float = 60.0) -> None:
    specs = changelog_specs(app)
    admin = AdminClient(admin_config(settings))
    apply_topics(admin, specs)
    wait_for_leaders(admin, [spec.name for spec in specs], timeout)
