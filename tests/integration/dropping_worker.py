"""The worker with one fault injected, for tests/integration/test_intake_stall.py: every
record of one intake partition is dropped the first time Faust's consumer fetches it, before
it reaches the stream, as Faust 0.15 was seen to drop records around a restart
(docs/exactly-once.md). A record fetched again (after a seek) passes, unless
RECOVERY_TEST_DROP_ALWAYS=1: then the partition never gets through.

Run as the worker: `python tests/integration/dropping_worker.py` with the worker's
environment and RECOVERY_TEST_DROP_TOPIC / RECOVERY_TEST_DROP_PARTITION."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from faust.transport.consumer import Consumer  # noqa: E402

TOPIC = os.environ["RECOVERY_TEST_DROP_TOPIC"]
PARTITION = int(os.environ.get("RECOVERY_TEST_DROP_PARTITION", "0"))
ALWAYS = os.environ.get("RECOVERY_TEST_DROP_ALWAYS") == "1"
dropped: set[int] = set()
fetch = Consumer.getmany


async def getmany(self, timeout):  # type: ignore[no-untyped-def]
    async for tp, message in fetch(self, timeout):
        ours = tp.topic == TOPIC and tp.partition == PARTITION
        if ours and (ALWAYS or message.offset not in dropped):
            if message.offset not in dropped:
                print(f"injected: dropped {tp.topic}[{tp.partition}]@{message.offset}",
                      file=sys.stderr, flush=True)
            dropped.add(message.offset)
            continue
        yield tp, message


Consumer.getmany = getmany  # type: ignore[method-assign]

if __name__ == "__main__":
    from app.cli.main import main

    sys.argv = ["recovery", "worker"]
    main()
