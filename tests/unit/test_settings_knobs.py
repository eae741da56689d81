"""Every knob is one the settings read, and every knob the settings read is documented."""

from __future__ import annotations

from pathlib import Path

import yaml

from app.settings import Settings

REPO = Path(__file__).resolve().parents[2]
PROJECT_IMAGE = "kafka-recovery"


def names_of(name: str) -> list[str]:
    """The environment variables a setting is read from."""
    choices = getattr(Settings.model_fields[name].validation_alias, "choices", None)
    return list(choices) if choices else [f"RECOVERY_{name.upper()}"]


def environment_names() -> set[str]:
    return {env for name in Settings.model_fields for env in names_of(name)}


def project_services(compose: dict) -> dict[str, dict]:
    return {name: service for name, service in compose["services"].items()
            if str(service.get("image", "")).startswith(PROJECT_IMAGE) or "build" in service}


def test_compose_sets_only_variables_the_settings_read() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = project_services(compose)
    assert {"worker", "topics"} <= set(services)
    known = environment_names()
    unread = {(name, var) for name, service in services.items()
              for var in (service.get("environment") or {}) if var not in known}
    assert unread == set()


def test_the_checker_sees_a_dead_knob(tmp_path: Path) -> None:
    compose = {"services": {"worker": {"image": "kafka-recovery:latest",
                                       "environment": {"S3_ENDPOINT_URL": "http://minio"}}}}
    known = environment_names()
    unread = [var for service in project_services(compose).values()
              for var in service["environment"] if var not in known]
    assert unread == ["S3_ENDPOINT_URL"]


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    missing = []
    for name in Settings.model_fields:
        if not any(f"`{env}`" in readme for env in names_of(name)):
            missing.append(name)
    assert missing == []
