"""`recovery demo`, what `scripts/run` shows a newcomer, against a real worker and broker."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def test_demo_sees_every_incident_end_and_a_retried_record_complete(applied_topics,
                                                                    worker_factory):
    worker = worker_factory()
    result = run_cli(applied_topics, "demo", "--timeout", "150", timeout=200)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-2000:],
                                    worker.log_tail())
    assert "service: order-1 handled (attempt 3)" in result.stdout
    assert "recovery/recovery_completed" in result.stdout
    assert "poison: undecodable failure event" in result.stdout
    assert "1 completed" in result.stdout.split("outcomes:")[-1]
