"""The deployment's topic names (prefix applied) that the pipeline sends to, resolved once."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.contracts import topics as t
from app.kafka.topics import TopicSpec
from app.pipeline.retry.tiers import tier_delay_ms
from app.settings import Settings


@dataclass(frozen=True)
class TopicNames:
    failures: str
    commands: str
    events: str
    dlq: str
    poison: str
    heartbeats: str
    tiers: dict[int, str] = field(default_factory=dict)  # delay ms -> retry tier topic

    @classmethod
    def of(cls, settings: Settings, specs: list[TopicSpec]) -> TopicNames:
        topic = settings.topic
        tiers = {delay: topic(spec.name) for spec in specs
                 if (delay := tier_delay_ms(spec.name)) is not None}
        return cls(failures=topic(t.FAILURES), commands=topic(t.COMMANDS),
                   events=topic(t.EVENTS), dlq=topic(t.DLQ), poison=topic(t.POISON),
                   heartbeats=topic(t.HEARTBEATS), tiers=dict(sorted(tiers.items())))
