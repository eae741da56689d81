"""The worker's assignor when the leader's metadata does not list a global table's changelog
(app/worker/assignor.py)."""

from __future__ import annotations

import faust
import pytest
from faust.assignor.client_assignment import ClientAssignment

from app.worker.assignor import MetadataTolerantAssignor


def app_with_global_table(assignor: type) -> tuple[faust.App, str]:
    app = faust.App("assignor-test", autodiscover=False, topic_partitions=4,
                    PartitionAssignor=assignor, store="memory://")
    table = app.GlobalTable("health", default=int)
    return app, table._changelog_topic_name()


def blank() -> dict[str, ClientAssignment]:
    return {"member-1": ClientAssignment(actives={}, standbys={}),
            "member-2": ClientAssignment(actives={}, standbys={})}


def test_faust_own_assignor_fails_on_the_missing_changelog() -> None:
    # What the worker's assignor is for: Faust's own raises on it.
    app, _ = app_with_global_table(faust.assignor.PartitionAssignor)
    with pytest.raises(KeyError):
        app.assignor._global_table_standby_assignments(blank(), {})


def test_a_changelog_missing_from_the_metadata_is_assigned_without_partitions() -> None:
    app, changelog = app_with_global_table(MetadataTolerantAssignor)
    assert isinstance(app.assignor, MetadataTolerantAssignor)
    assignments = app.assignor._global_table_standby_assignments(blank(), {})
    for assignment in assignments.values():
        assert assignment.actives[changelog] == []
        assert assignment.standbys[changelog] == []


def test_a_listed_changelog_goes_to_every_member_as_faust_assigns_it() -> None:
    app, changelog = app_with_global_table(MetadataTolerantAssignor)
    assignments = app.assignor._global_table_standby_assignments(blank(), {changelog: 4})
    for assignment in assignments.values():
        assert sorted(assignment.actives[changelog]) == [0, 1, 2, 3]
