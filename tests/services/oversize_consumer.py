"""A consumer service using ReassemblingConsumer, run as a process so a test can kill it:
`python -m tests.services.oversize_consumer GROUP TOPIC OUT`. Writes one JSON line per
whole message it handles, and one after each commit."""

from __future__ import annotations

import hashlib
import sys

import orjson

from app.client.large_messages import ReassemblingConsumer
from app.settings import Settings


def main(group: str, topic: str, out_path: str) -> None:
    # Static membership: a restarted process takes its partitions back at once instead of
    # waiting for the killed one's session to time out.
    consumer = ReassemblingConsumer(group, [topic], Settings(),
                                    consumer_config={"group.instance.id": f"{group}-member"})
    with open(out_path, "ab", buffering=0) as out:
        while True:
            message = consumer.poll(0.5)
            if message is not None:
                out.write(orjson.dumps({
                    "key": (message.key() or b"").decode(), "offset": message.offset(),
                    "partition": message.partition(),
                    "size": len(message.value() or b""),
                    "sha256": hashlib.sha256(message.value() or b"").hexdigest(),
                    "strategy": message.strategy}) + b"\n")
            consumer.commit()
            if message is not None:
                out.write(b'{"committed": true}\n')


if __name__ == "__main__":
    main(*sys.argv[1:4])
