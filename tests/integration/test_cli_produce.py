import subprocess
import sys

import orjson
import pytest

from tests.conftest import REPO
from tests.kafka_helpers import TopicReader, locked_codec

pytestmark = pytest.mark.integration


def test_produce_sends_good_lines_and_names_the_bad_one(applied_topics, topic_prefix):
    good = {"kind": "EVENT_DELIVERY_FAILED", "work_item_id": "cli-1",
            "source": {"service": "bus"}, "error": {"type": "topic_not_found"}}
    lines = [orjson.dumps(good).decode(), '{"kind": "NOT_A_KIND", "source": {}}',
             orjson.dumps({**good, "work_item_id": "cli-2"}).decode()]
    result = subprocess.run([sys.executable, "-m", "app", "produce", "-"], cwd=REPO,
                            env=applied_topics, input="\n".join(lines) + "\n",
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("line ")]
    assert len(errors) == 1 and errors[0].startswith("line 2: ")
    assert "sent 2 failure events" in result.stdout
    reader = TopicReader(applied_topics["KAFKA_BOOTSTRAP_SERVERS"],
                         [f"{topic_prefix}recovery.failures"])
    assert reader.wait_for(lambda ms: len(ms) >= 2, timeout=30)
    # The command has exited: everything it sent is on the broker. Read it all.
    assert reader.read_to_end([f"{topic_prefix}recovery.failures"], timeout=30)
    reader.close()
    codec = locked_codec()
    ids = sorted(codec.decode(m.value(), "failure-event")["work_item_id"]
                 for m in reader.messages)
    assert ids == ["cli-1", "cli-2"]
