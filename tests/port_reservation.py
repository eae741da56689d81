"""Keeping Linux from handing a local broker's ports out as clients' source ports.

The test brokers' ports (39092-39592, the fault run's 45xxx) lie in Linux's ephemeral range
(32768-60999), from which every outgoing connection takes its own port. A client connection
can therefore hold a broker's port: while a broker is down, clients reconnecting to it can be
given that very port and connect to themselves (TCP simultaneous open; librdkafka holds such
a connection for 60 s), and in a long test session any of the hundreds of client
connections may sit on a port a broker is about to bind (a clean-clone CI run failed to start
its TLS broker on 39292 that way). ip_local_reserved_ports takes ports out of that range.
On a real cluster brokers live on other hosts and none of this happens. Needs root; without
it nothing is reserved and the caller is told.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Callable, Iterator
from pathlib import Path

RESERVED_PORTS = Path("/proc/sys/net/ipv4/ip_local_reserved_ports")
# The list is read, changed and written back; two test processes (pytest -n 2) or a test and a
# fault run doing that at once would drop each other's ports without this lock.
LOCK = Path("/tmp/kafka-recovery-reserved-ports.lock")


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    with LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def port_set(text: str) -> set[int]:
    ports: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, _, high = part.partition("-")
        ports.update(range(int(low), int(high or low) + 1))
    return ports


@contextlib.contextmanager
def reserved_ports(ports: set[int],
                   on_failure: Callable[[str], None] = lambda message: None) -> Iterator[bool]:
    """Reserves the ports while the block runs, then puts the list back as it was (less what
    was added here). Yields whether the reservation took."""
    try:
        with _locked():
            before = port_set(RESERVED_PORTS.read_text())
            RESERVED_PORTS.write_text(",".join(map(str, sorted(before | ports))))
    except OSError as exc:
        on_failure(f"could not reserve ports {sorted(ports)} ({exc})")
        yield False
        return
    try:
        yield True
    finally:
        with contextlib.suppress(OSError), _locked():
            now = port_set(RESERVED_PORTS.read_text())
            # A newline: an empty write would leave the list as it is.
            RESERVED_PORTS.write_text(",".join(map(str, sorted(now - (ports - before)))) + "\n")
