import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from app.kafka.topics import load_topic_specs, wait_for_leaders
from tests.conftest import REPO, run_cli, wait_until

pytestmark = pytest.mark.integration


def topic_config(admin: AdminClient, topic: str, key: str) -> str:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return admin.describe_configs([resource])[resource].result()[key].value


def test_apply_creates_then_is_idempotent_then_repairs_config_drift(
    service_env: dict[str, str], topic_prefix: str, kafka_bootstrap: str
) -> None:
    first = run_cli(service_env, "topics", "apply")
    assert first.returncode == 0, first.stderr
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    topics = admin.list_topics(timeout=10).topics
    dlq = f"{topic_prefix}recovery.dlq"
    assert dlq in topics and f"{topic_prefix}recovery.tool-registry" in topics
    assert len(topics[f"{topic_prefix}recovery.tool-registry"].partitions) == 1
    registry = f"{topic_prefix}recovery.tool-registry"
    assert topic_config(admin, registry, "cleanup.policy") == "compact"
    defined = len(load_topic_specs(REPO / "topics"))
    assert f"{defined} created" in first.stdout

    second = run_cli(service_env, "topics", "apply")
    assert second.returncode == 0
    assert f"0 created, 0 altered, {defined} unchanged, 0 drifted" in second.stdout

    # Someone changes a config by hand: apply reports it and puts the definition back.
    resource = ConfigResource(
        ConfigResource.Type.TOPIC, dlq,
        incremental_configs=[ConfigEntry("retention.ms", "1000",
                                         incremental_operation=AlterConfigOpType.SET)],
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result()
    # The broker applies a change a moment after acknowledging it.
    assert wait_until(lambda: topic_config(admin, dlq, "retention.ms") == "1000", 30)
    third = run_cli(service_env, "topics", "apply")
    assert f"altered {dlq}: retention.ms 1000 -> 2592000000" in third.stdout
    assert topic_config(admin, dlq, "retention.ms") == "2592000000"


def test_apply_reports_partition_drift_and_never_deletes(
    service_env: dict[str, str], topic_prefix: str, kafka_bootstrap: str
) -> None:
    from confluent_kafka.admin import NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    # A topic not co-partitioned with the intake (defined with one partition).
    progress = f"{topic_prefix}recovery.replay-progress"
    extra = f"{topic_prefix}not-ours"
    for future in admin.create_topics([NewTopic(progress, 5, 1),
                                       NewTopic(extra, 1, 1)]).values():
        future.result()
    wait_for_leaders(admin, [progress, extra])  # visible to the next client, too
    result = run_cli(service_env, "topics", "apply")
    assert result.returncode == 0, result.stderr
    assert f"drift: {progress}: 5 partitions, definition says 1" in result.stdout
    topics = admin.list_topics(timeout=10).topics
    assert extra in topics and len(topics[progress].partitions) == 5


def test_apply_refuses_to_change_a_copartitioned_topics_partitions_and_says_how_to_migrate(
    service_env: dict[str, str], topic_prefix: str, kafka_bootstrap: str
) -> None:
    from confluent_kafka.admin import NewTopic

    from app.kafka.topics import load_topic_specs
    from app.settings import REPO_ROOT

    defined = {s.name: s.partitions for s in load_topic_specs(REPO_ROOT / "topics")}
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    failures = f"{topic_prefix}recovery.failures"
    old_count = defined["recovery.failures"] // 4
    for future in admin.create_topics([NewTopic(failures, old_count, 1)]).values():
        future.result()
    wait_for_leaders(admin, [failures])
    result = run_cli(service_env, "topics", "apply")
    assert result.returncode == 1, result.stdout
    assert (f"refused: {failures}: {old_count} partitions, definition says "
            f"{defined['recovery.failures']} (co-partitioned with {failures})") in result.stderr
    assert "how to migrate:" in result.stderr and "RECOVERY_TOPIC_PREFIX" in result.stderr
    topics = admin.list_topics(timeout=10).topics
    assert len(topics[failures].partitions) == old_count
    # The other definitions were still applied.
    assert f"{topic_prefix}recovery.events" in topics


def test_apply_warns_when_capping_replication_to_a_small_cluster(
    service_env: dict[str, str], kafka_bootstrap: str
) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    brokers = len(admin.list_topics(timeout=10).brokers)
    result = run_cli(service_env, "topics", "apply", "--dry-run")
    assert result.returncode == 0
    if brokers < 3:
        assert f"replication factor 3 capped to {brokers}" in result.stderr
    else:
        assert "capped" not in result.stderr
