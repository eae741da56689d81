"""A small service written with Faust, using RecoveringAgent: run as
`python -m tests.services.faust_billing worker`. Its handler fails the first two times it
sees key `order-1` (every time with BILLING_ALWAYS_FAIL=1), and writes every record it
handles to $BILLING_HANDLED (one line each); with $BILLING_MODES set, also one JSON line
there per handled record with the wrapper's mode at that moment. BILLING_REPORTER_BOOTSTRAP
sends its failure reports to another address (a relay that tests keep closed to model a
broker blip)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import faust
import orjson

from app.client.faust_agent import RecoveringAgent
from app.client.reporter import FailureReporter
from app.settings import Settings

settings = Settings()
app = faust.App(
    os.environ["BILLING_APP_ID"],
    broker=f"kafka://{settings.kafka_bootstrap_servers}",
    web_enabled=False,
    store="memory://",
    consumer_auto_offset_reset="earliest",
    topic_replication_factor=1,
    # A stopped service's partitions go to its replacement after 10 s, not a minute.
    broker_session_timeout=10.0,
)
reporter_bootstrap = os.environ.get("BILLING_REPORTER_BOOTSTRAP")
reporter = FailureReporter(settings.model_copy(
    update={"kafka_bootstrap_servers": reporter_bootstrap})) if reporter_bootstrap else None
recovering = RecoveringAgent(app, group=os.environ["BILLING_GROUP"], service="billing",
                             settings=settings, heartbeat_interval=1.0, reporter=reporter)
handled = Path(os.environ["BILLING_HANDLED"])
modes = Path(os.environ["BILLING_MODES"]) if os.environ.get("BILLING_MODES") else None
always_fail = os.environ.get("BILLING_ALWAYS_FAIL") == "1"
calls: dict[bytes, int] = {}


@recovering.agent(os.environ["BILLING_TOPIC"], name="billing")
async def bill(event: faust.EventT) -> None:
    key = event.message.key
    calls[key] = calls.get(key, 0) + 1
    if always_fail or (key == b"order-1" and calls[key] <= 2):
        raise RuntimeError("downstream timeout")
    with handled.open("a") as out:
        out.write(f"{key.decode()} {calls[key]}\n")
    if modes is not None:
        with modes.open("ab") as out:
            out.write(orjson.dumps({
                "key": key.decode(), "offset": event.message.offset,
                "state": recovering.mode.state, "skipped": recovering.skipped,
                "debug": recovering.log.getEffectiveLevel() == logging.DEBUG,
                "reduced": recovering.mode.reduced_parallelism}) + b"\n")


if __name__ == "__main__":
    app.main()
