#!/usr/bin/env python3
"""The smallest Faust worker, for scripts/bench_pipeline.py: one agent that sends each input
record's bytes on to a sink topic, with the worker's transport settings (acks=all, raw
bytes, the same direct producer send as app/worker.Pipeline.send) and no decoding, state or
lifecycle events. Its rate is what Faust's per-record machinery allows on this machine
before the recovery work adds anything.

  PASSTHROUGH_BROKER=... PASSTHROUGH_SOURCE=... PASSTHROUGH_SINK=... PASSTHROUGH_APP_ID=...
  PASSTHROUGH_DATA_DIR=... PASSTHROUGH_WEB_PORT=... python scripts/faust_passthrough.py
"""

from __future__ import annotations

import os
import sys

import faust

env = os.environ
app = faust.App(env["PASSTHROUGH_APP_ID"], broker=f"kafka://{env['PASSTHROUGH_BROKER']}",
                datadir=env["PASSTHROUGH_DATA_DIR"], web_port=int(env["PASSTHROUGH_WEB_PORT"]),
                producer_acks=-1, consumer_auto_offset_reset="earliest", autodiscover=False,
                broker_commit_every=1000, broker_commit_interval=1.0)
source = app.topic(env["PASSTHROUGH_SOURCE"], key_type=bytes, value_type=bytes,
                   key_serializer="raw", value_serializer="raw")
sink = env["PASSTHROUGH_SINK"]


@app.agent(source, name="passthrough")
async def passthrough(stream: faust.StreamT) -> None:
    async for event in stream.events():
        message = event.message
        await app.producer.send(sink, message.key, message.value, None, None,
                                message.headers)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()
