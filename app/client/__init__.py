"""Client API for services: report failures, acknowledge redeliveries, send heartbeats, and
a consumer wrapper that does all three on its own."""

from app.client.consumer import RecoveringConsumer
from app.client.reporter import FailureReporter, work_item_of

__all__ = ["FailureReporter", "RecoveringConsumer", "work_item_of"]
