"""Client API for services: report failures, acknowledge redeliveries, send heartbeats, and
consumer wrappers (a confluent-kafka loop, a Faust agent) that do all three on their own."""

from app.client.consumer import RecoveringConsumer
from app.client.reporter import FailureReporter, work_item_of

__all__ = ["FailureReporter", "RecoveringConsumer", "work_item_of"]
