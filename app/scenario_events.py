"""The source document's event names for a failure as first reported, per failure kind."""

from __future__ import annotations

REPORTED_EVENT = {
    "MCP_CONNECTION_LOST": "communication/mcp_connection_lost",
    "TOOL_DISCOVERY_FAILED": "communication/tool_discovery_failed",
    "EVENT_DELIVERY_FAILED": "communication/event_delivery_failed",
    "CONSUMER_CRASHED": "communication/consumer_crashed",
    "CACHE_CORRUPTED": "communication/cache_corrupted",
    "VERSION_CONFLICT": "communication/cache_corrupted",
    "NETWORK_PARTITION": "communication/network_partition_detected",
}


def reported_event(kind: str) -> str:
    return REPORTED_EVENT.get(kind, "communication/failure_reported")
