from pathlib import Path

from app.kafka.topics import TopicSpec, fit_to_cluster, load_topic_specs

REPO = Path(__file__).resolve().parents[3]


def test_definitions_load_with_defaults_and_overrides() -> None:
    specs = {s.name: s for s in load_topic_specs(REPO / "topics")}
    assert specs["recovery.failures"].partitions == 3
    assert specs["recovery.tool-registry"].partitions == 1
    assert specs["recovery.tool-registry"].config["cleanup.policy"] == "compact"
    assert specs["recovery.dlq"].config["min.insync.replicas"] == "2"
    for name in ("recovery.events", "recovery.poison", "recovery.retry.1s", "recovery.retry.30s"):
        assert name in specs


def test_replication_and_min_isr_are_capped_to_a_small_cluster() -> None:
    spec = TopicSpec("a", 3, 3, {"min.insync.replicas": "2"})
    fitted, warnings = fit_to_cluster(spec, 1)
    assert fitted.replication_factor == 1
    assert fitted.config["min.insync.replicas"] == "1"
    assert len(warnings) == 2


def test_a_big_enough_cluster_keeps_the_definition() -> None:
    spec = TopicSpec("a", 3, 3, {"min.insync.replicas": "2"})
    fitted, warnings = fit_to_cluster(spec, 3)
    assert fitted == spec
    assert warnings == []


def test_prefix_applies_to_the_name_only() -> None:
    spec = TopicSpec("recovery.dlq", 3, 1, {"x": "y"})
    assert spec.prefixed("p.") == TopicSpec("p.recovery.dlq", 3, 1, {"x": "y"})
