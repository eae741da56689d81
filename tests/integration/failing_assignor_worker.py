"""The worker with one fault injected, for tests/integration/test_rebalance_bound.py: the
group leader's assignment fails (as Faust's own assignor failed on a changelog missing from
the leader's metadata: app/worker/assignor.py), the first time only, or every time when
RECOVERY_TEST_ASSIGN_ALWAYS_FAILS=1. aiokafka then waits for the consumer to poll the error,
which Faust never does without an assignment: the worker stays in its group with nothing.

Run as the worker: `python tests/integration/failing_assignor_worker.py` with the worker's
environment."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.worker.assignor import MetadataTolerantAssignor  # noqa: E402

ALWAYS = os.environ.get("RECOVERY_TEST_ASSIGN_ALWAYS_FAILS") == "1"
assign = MetadataTolerantAssignor.assign
calls = [0]


def failing_assign(self: Any, cluster: Any, members: Any) -> Any:
    calls[0] += 1
    if ALWAYS or calls[0] == 1:
        print(f"injected: assignment {calls[0]} failed", file=sys.stderr, flush=True)
        raise KeyError("injected: a changelog missing from the leader's metadata")
    return assign(self, cluster, members)


MetadataTolerantAssignor.assign = failing_assign  # type: ignore[method-assign]

if __name__ == "__main__":
    from app.cli.main import main

    sys.argv = ["recovery", "worker"]
    main()
