"""The worker's changelog topics as Faust would create them (app/changelogs.py), so they can
exist before the worker joins its group."""

from __future__ import annotations

from pathlib import Path

from app.kafka.changelogs import changelog_specs
from app.settings import Settings
from app.worker.app import create_app


def test_every_table_has_its_changelog_with_faust_name_partitions_and_policy(tmp_path: Path):
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1", topic_prefix="p.",
                        app_id="recovery-p", data_dir=tmp_path)
    app = create_app(settings, replication_factor=1)
    specs = {spec.name: spec for spec in changelog_specs(app)}
    assert set(specs) == {f"recovery-p-{t.name}-changelog" for t in app.tables.values()}
    assert {"recovery-p-incidents-changelog", "recovery-p-consumer-health-changelog",
            "recovery-p-lifecycle-counts-changelog"} <= set(specs)
    assert specs["recovery-p-incidents-changelog"].partitions == 12
    assert specs["recovery-p-scenario-watches-changelog"].partitions == 1
    assert all(spec.config == {"cleanup.policy": "compact"} for spec in specs.values())
    assert all(spec.replication_factor == 1 for spec in specs.values())
