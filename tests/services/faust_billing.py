"""A small service written with Faust, using RecoveringAgent: run as
`python -m tests.services.faust_billing worker`. Its handler fails the first two times it
sees key `order-1`, and writes every record it handles to $BILLING_HANDLED (one line each)."""

from __future__ import annotations

import os
from pathlib import Path

import faust

from app.client.faust_agent import RecoveringAgent
from app.settings import Settings

settings = Settings()
app = faust.App(
    os.environ["BILLING_APP_ID"],
    broker=f"kafka://{settings.kafka_bootstrap_servers}",
    web_enabled=False,
    store="memory://",
    consumer_auto_offset_reset="earliest",
    topic_replication_factor=1,
)
recovering = RecoveringAgent(app, group=os.environ["BILLING_GROUP"], service="billing",
                             settings=settings, heartbeat_interval=1.0)
handled = Path(os.environ["BILLING_HANDLED"])
calls: dict[bytes, int] = {}


@recovering.agent(os.environ["BILLING_TOPIC"], name="billing")
async def bill(event: faust.EventT) -> None:
    key = event.message.key
    calls[key] = calls.get(key, 0) + 1
    if key == b"order-1" and calls[key] <= 2:
        raise RuntimeError("downstream timeout")
    with handled.open("a") as out:
        out.write(f"{key.decode()} {calls[key]}\n")


if __name__ == "__main__":
    app.main()
