#!/usr/bin/env python3
"""The smallest Faust worker that only consumes, for scripts/bench_pipeline.py: one agent
taking its input in batches (`stream.take_events`, the worker's batch size and wait) with
no decoding, state or sends per record. After each batch it produces one tally record (the
batch's size) through a confluent-kafka producer, so that the benchmark can time it by broker
timestamps. Its rate is Faust's own ceiling on this machine, before any recovery work.

  CONSUME_BROKER=... CONSUME_SOURCE=... CONSUME_TALLIES=... CONSUME_APP_ID=...
  CONSUME_DATA_DIR=... CONSUME_BATCH=1000 CONSUME_WAIT_MS=20 python scripts/faust_consume_only.py
"""

from __future__ import annotations

import os
import sys

import faust
from confluent_kafka import Producer

env = os.environ
app = faust.App(env["CONSUME_APP_ID"], broker=f"kafka://{env['CONSUME_BROKER']}",
                datadir=env["CONSUME_DATA_DIR"], web_enabled=False,
                producer_acks=-1, consumer_auto_offset_reset="earliest", autodiscover=False,
                broker_commit_every=1000, broker_commit_interval=1.0)
source = app.topic(env["CONSUME_SOURCE"], key_type=bytes, value_type=bytes,
                   key_serializer="raw", value_serializer="raw")
tallies = env["CONSUME_TALLIES"]
size, wait_s = int(env.get("CONSUME_BATCH", "1000")), int(env.get("CONSUME_WAIT_MS", "20")) / 1000
producer = Producer({"bootstrap.servers": env["CONSUME_BROKER"], "linger.ms": 5})


@app.agent(source, name="consume-only")
async def consume_only(stream: faust.StreamT) -> None:
    async for events in stream.take_events(size, wait_s):
        producer.produce(tallies, str(len(events)).encode())
        producer.poll(0)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()
