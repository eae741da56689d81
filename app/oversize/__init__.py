"""Oversized messages: make a payload fit its topic (compression, fragmentation, claim-check
reference in an object store) and give it back whole on the consumer side. The source is
Scenario 3's handleMessageTooLarge in communication-failures.md; docs/oversized-messages.md
explains the formats and guarantees."""

from app.oversize.assembler import Assembler, AssemblyLimits
from app.oversize.encoder import Encoded, MessageTooLarge, encode
from app.oversize.offsets import OffsetTracker
from app.oversize.policy import TopicPolicy, parse_policy, topic_policy
from app.oversize.reassembly import Reassembler
from app.oversize.records import Incoming, Rejected, Whole
from app.oversize.reference import Reference, ReferenceRejected, StoreLocation
from app.oversize.store import ClaimCheckStore, FileStore, S3Store, StoreError, open_store

__all__ = ["Assembler", "AssemblyLimits", "ClaimCheckStore", "Encoded", "FileStore", "Incoming",
           "MessageTooLarge", "OffsetTracker", "Reassembler", "Reference", "ReferenceRejected",
           "Rejected", "S3Store", "StoreError", "StoreLocation", "TopicPolicy", "Whole", "encode",
           "open_store", "parse_policy", "topic_policy"]
