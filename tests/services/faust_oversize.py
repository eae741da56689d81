"""A Faust service reading oversized messages through FaustReassembler: run as
`python -m tests.services.faust_oversize worker`. Writes one JSON line per whole message
to $OVERSIZE_OUT."""

from __future__ import annotations

import hashlib
import os

import faust
import orjson

from app.client.large_messages import FaustReassembler
from app.settings import Settings

settings = Settings()
app = faust.App(
    os.environ["OVERSIZE_APP_ID"],
    broker=f"kafka://{settings.kafka_bootstrap_servers}",
    web_enabled=False,
    store="memory://",
    consumer_auto_offset_reset="earliest",
    topic_replication_factor=1,
    broker_commit_interval=0.5,
    # A killed service's partitions go to its restarted self in seconds.
    broker_session_timeout=6.0,
    broker_heartbeat_interval=1.0,
)
topic = app.topic(os.environ["OVERSIZE_TOPIC"], key_type=bytes, value_type=bytes,
                  key_serializer="raw", value_serializer="raw")
reassembler = FaustReassembler(app, settings)


@app.agent(topic, name="oversize-reader")
async def read(stream: faust.StreamT) -> None:
    async for message in reassembler.messages(stream):
        value = message.value() or b""
        with open(os.environ["OVERSIZE_OUT"], "ab") as out:
            out.write(orjson.dumps({
                "key": (message.key() or b"").decode(), "size": len(value),
                "sha256": hashlib.sha256(value).hexdigest(), "strategy": message.strategy,
                "headers": [[k, (v or b"").decode()] for k, v in message.headers()]}) + b"\n")


if __name__ == "__main__":
    app.main()
