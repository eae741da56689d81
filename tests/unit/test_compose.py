"""docker-compose.yml parses with the real `docker compose config`, and the monitoring it
provisions points at the worker's metrics."""

import json
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_docker_compose_config_parses_with_every_service() -> None:
    result = subprocess.run([str(REPO / "scripts" / "compose-config"), "--format", "json"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (
        f"{result.stderr}\n(the setup step `scripts/compose-config --install` provides the tool)")
    config = json.loads(result.stdout)
    services = set(config["services"])
    assert {"kafka", "minio", "worker", "prometheus", "grafana", "topics"} <= services
    assert config["services"]["kafka"]["image"].startswith("apache/kafka:4.")
    worker_env = config["services"]["worker"]["environment"]
    assert worker_env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"
    assert config["services"]["worker"]["depends_on"]["topics"]["condition"] == \
        "service_completed_successfully"
    # the registry, with the project's schemas pushed before the worker starts
    assert config["services"]["schema-registry"]["image"].startswith("apicurio/apicurio-registry")
    assert worker_env["SCHEMA_REGISTRY_URL"] == "http://schema-registry:8080/apis/ccompat/v7"
    assert config["services"]["schemas"]["command"] == ["schemas", "push"]
    assert config["services"]["worker"]["depends_on"]["schemas"]["condition"] == \
        "service_completed_successfully"


def test_compose_config_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  worker:\n    depends_on: [nowhere]\n    image: x\n")
    result = subprocess.run(["docker", "compose", "-f", str(broken), "config", "-q"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "nowhere" in result.stderr


def test_grafana_dashboard_uses_recovery_metrics_from_the_provisioned_datasource() -> None:
    dashboard = json.loads((REPO / "deploy/grafana/dashboards/recovery.json").read_text())
    datasource = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid
        for target in panel["targets"]:
            assert "recovery_" in target["expr"]


def test_prometheus_scrapes_the_worker() -> None:
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    targets = [t for job in config["scrape_configs"] for s in job["static_configs"]
               for t in s["targets"]]
    assert "worker:6066" in targets
