"""scripts/registry: the URL is the last line of stdout, a second start finds the running
registry, status and stop tell the truth, and a port in use is one plain refusal."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

from tests.conftest import free_port
from tests.registry_helpers import with_launcher


def test_start_status_stop(tmp_path: Path) -> None:
    port = free_port()
    started = with_launcher("start", port, tmp_path)
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip().splitlines()[-1]
    assert url == f"http://127.0.0.1:{port}/apis/ccompat/v7"
    try:
        with urllib.request.urlopen(f"{url}/subjects", timeout=5) as answer:
            assert answer.read() == b"[]"
        again = with_launcher("start", port, tmp_path)
        assert again.returncode == 0 and "already running" in again.stderr
        assert again.stdout.strip().splitlines()[-1] == url
        status = with_launcher("status", port, tmp_path)
        assert status.returncode == 0 and "answers" in status.stdout
    finally:
        stopped = with_launcher("stop", port, tmp_path)
    assert stopped.returncode == 0 and "stopped pid" in stopped.stderr
    assert with_launcher("status", port, tmp_path).returncode == 3


def test_a_port_in_use_is_refused_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = with_launcher("start", port, tmp_path)
    assert result.returncode == 1
    assert f"port {port} is already in use" in result.stderr
    assert result.stdout == ""
