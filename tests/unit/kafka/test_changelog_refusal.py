"""ensure_changelogs asks again while the authorizer refuses (fresh ACLs propagate), and
past its bound raises one line naming the missing grant; other errors pass through."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException

from app.kafka import changelogs
from app.kafka.topics import TopicSpec
from app.settings import Settings

SPEC = TopicSpec("recovery-x-incidents-changelog", 12, 1, {"cleanup.policy": "compact"})


@pytest.fixture
def calls(monkeypatch):
    answers: list[object] = []
    made: list[str] = []

    def apply_topics(admin, specs):
        made.append("apply")
        answer = answers.pop(0) if answers else None
        if answer is not None:
            raise KafkaException(KafkaError(answer, "Authorization failed."))

    monkeypatch.setattr(changelogs, "changelog_specs", lambda app: [SPEC])
    monkeypatch.setattr(changelogs, "apply_topics", apply_topics)
    monkeypatch.setattr(changelogs, "wait_for_leaders",
                        lambda admin, names, timeout: made.append("leaders"))
    monkeypatch.setattr(changelogs, "AdminClient", lambda config: SimpleNamespace())
    monkeypatch.setattr(changelogs.time, "sleep", lambda s: None)
    return SimpleNamespace(answers=answers, made=made)


def test_a_refusal_that_ends_is_asked_again_and_then_the_leaders_awaited(calls) -> None:
    calls.answers += [KafkaError.TOPIC_AUTHORIZATION_FAILED] * 2
    changelogs.ensure_changelogs(object(), Settings(), authorization_wait_s=30)
    assert calls.made == ["apply", "apply", "apply", "leaders"]


def test_a_refusal_past_the_bound_is_one_line_naming_the_grant(calls) -> None:
    calls.answers += [KafkaError.TOPIC_AUTHORIZATION_FAILED] * 100
    with pytest.raises(changelogs.ChangelogsRefused) as refused:
        changelogs.ensure_changelogs(object(), Settings(), authorization_wait_s=0)
    assert "\n" not in str(refused.value)
    assert "CREATE and DESCRIBE" in str(refused.value)
    assert "recovery-x-*-changelog" in str(refused.value)
    assert "leaders" not in calls.made


def test_other_errors_are_not_retried(calls) -> None:
    calls.answers.append(KafkaError.POLICY_VIOLATION)
    with pytest.raises(KafkaException):
        changelogs.ensure_changelogs(object(), Settings(), authorization_wait_s=30)
    assert calls.made == ["apply"]
