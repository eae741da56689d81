"""Consumer-lag monitoring: snapshots of committed and end offsets (collect), time lag from a
window of end offsets (timelag), status rules in the manner of Burrow (status), and the
windows kept between snapshots (tracker)."""

from app.lag.collect import LagCollector, LagError, Snapshot, parse_patterns
from app.lag.status import Sample, Status
from app.lag.tracker import GroupLag, LagTracker, LagView, PartitionLag

__all__ = ["GroupLag", "LagCollector", "LagError", "LagTracker", "LagView", "PartitionLag",
           "Sample", "Snapshot", "Status", "parse_patterns"]
