"""The worker's table changelog topics, created (and visible with a leader for every
partition) before the worker joins its group.

Faust creates them itself at start-up, just before the consumer joins the group; when the
group leader's metadata does not list a just-created changelog of a global table yet, Faust's
assignor fails on it (a KeyError in ``_global_table_standby_assignments``), aiokafka hands
that error to a consumer that will never poll for it, and the worker stays in its group
without an assignment, doing nothing (seen under SASL_SSL: docs/exactly-once.md).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from app.kafka.config import admin_config
from app.kafka.topics import TopicSpec, apply_topics, wait_for_leaders
from app.settings import Settings

log = logging.getLogger(__name__)


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


class ChangelogsRefused(Exception):
    """The cluster kept refusing to create or describe the changelogs; one line for the user."""


AUTHORIZATION_CODES = (KafkaError.TOPIC_AUTHORIZATION_FAILED,
                       KafkaError.CLUSTER_AUTHORIZATION_FAILED)


def ensure_changelogs(app: Any, settings: Settings, timeout: float = 60.0,
                      authorization_wait_s: float = 30.0) -> None:
    """Creates the changelogs and waits for their leaders. A refusal by the authorizer is
    asked again for up to `authorization_wait_s`: ACLs just created (`recovery acls apply`
    right before the worker starts) reach the brokers a moment later. Past that, raises
    ChangelogsRefused saying which grant is missing."""
    specs = changelog_specs(app)
    admin = AdminClient(admin_config(settings))
    deadline = time.monotonic() + authorization_wait_s
    pause = 0.5
    while True:
        try:
            apply_topics(admin, specs)
            break
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if not isinstance(error, KafkaError) or error.code() not in AUTHORIZATION_CODES:
                raise
            if time.monotonic() + pause > deadline:
                raise ChangelogsRefused(
                    f"the cluster refuses this principal the changelog topics "
                    f"({specs[0].name.rsplit('-', 2)[0]}-*-changelog): {error.str()}; it "
                    "needs CREATE and DESCRIBE on them (recovery acls plan --worker ...)"
                ) from exc
            log.warning("creating the changelogs was refused (%s); asking again in %.1f s "
                        "(ACLs just created take a moment to reach the brokers)",
                        error.str(), pause)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)
    wait_for_leaders(admin, [spec.name for spec in specs], timeout)
