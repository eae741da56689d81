from pathlib import Path

from app.kafka.topics import TopicSpec, fit_to_cluster, load_topic_specs

REPO = Path(__file__).resolve().parents[3]


def test_definitions_load_with_defaults_and_overrides() -> None:
    specs = {s.name: s for s in load_topic_specs(REPO / "topics")}
    assert specs["recovery.failures"].partitions == 12
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


def test_copartitioned_topics_are_those_with_the_intake_partition_count() -> None:
    from app.kafka.topics import copartitioned_names

    specs = [TopicSpec("p.recovery.failures", 12, 1), TopicSpec("p.recovery.retry.1s", 12, 1),
             TopicSpec("p.recovery.watches", 1, 1), TopicSpec("p.other", 6, 1)]
    assert copartitioned_names(specs, "p.") == {"p.recovery.failures", "p.recovery.retry.1s"}
    assert copartitioned_names(specs) == set()  # no intake topic under that prefix


def test_the_readme_topic_table_matches_the_definitions() -> None:
    from app.kafka.topics import copartitioned_names

    readme = (REPO / "README.md").read_text()
    specs = load_topic_specs(REPO / "topics")
    copartitioned = copartitioned_names(specs)
    for spec in specs:
        row = (f"| `{spec.name}` | {spec.partitions} | "
               f"{'yes' if spec.name in copartitioned else ''} |")
        assert row in readme, f"README's topic table is out of date for {spec.name}"
