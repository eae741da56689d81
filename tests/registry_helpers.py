"""A real Confluent-compatible schema registry for tests: RECOVERY_TEST_SCHEMA_REGISTRY_URL
if set, else Apicurio Registry started by scripts/registry (built once into the launcher
cache by scripts/setup). Import the fixtures into a test module to use them.

A test that freezes or stops its registry gets one of its own (`own_registry`); the others
share one per session (`schema_registry_url`), each using its own subjects (topic prefix)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent
LAUNCHER = REPO / "scripts" / "registry"


@dataclass
class RunningRegistry:
    url: str
    port: int
    data_dir: Path

    @property
    def pid(self) -> int:
        return int((self.data_dir / "registry.pid").read_text())

    def freeze(self) -> None:
        """SIGSTOP: connections are accepted by the kernel, never answered (a hung registry)."""
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        with_launcher("stop", self.port, self.data_dir)


def with_launcher(verb: str, port: int, data_dir: Path, *extra: str,
                  timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(LAUNCHER), verb, "--port", str(port),
                           "--data-dir", str(data_dir), *extra],
                          capture_output=True, text=True, timeout=timeout)


def start_registry(data_dir: Path) -> RunningRegistry:
    port = free_port()
    started = with_launcher("start", port, data_dir, "--fresh")
    if started.returncode != 0:
        pytest.fail(f"scripts/registry start failed:\n{started.stdout}\n{started.stderr}")
    return RunningRegistry(started.stdout.strip().splitlines()[-1], port, data_dir)


@pytest.fixture(scope="session")
def schema_registry_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("RECOVERY_TEST_SCHEMA_REGISTRY_URL")
    if configured:
        yield configured
        return
    registry = start_registry(tmp_path_factory.mktemp("registry"))
    try:
        yield registry.url
    finally:
        registry.thaw()
        registry.stop()


@pytest.fixture
def own_registry(tmp_path: Path) -> Iterator[Callable[[], RunningRegistry]]:
    started: list[RunningRegistry] = []

    def start() -> RunningRegistry:
        registry = start_registry(tmp_path / f"registry-{len(started)}")
        started.append(registry)
        return registry

    yield start
    for registry in started:
        registry.thaw()
        registry.stop()
