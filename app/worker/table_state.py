"""The worker's local tables after a run that did not stop cleanly.

Faust writes a table's value to the local RocksDB at once and to its changelog later; a
worker killed in between (SIGKILL, a crash, an exit past a deadline) leaves a local table
ahead of its changelog. The batch that made the write was not acknowledged, so the next start
handles it again, but it now reads the write as done and sends nothing: the changelog never
gets it, and whichever worker restores that partition from the changelog next (after a
rebalance) finds the incident as it was before, and decides it a second time. Kafka Streams
does the same under exactly-once: local state a crashed instance left is wiped and restored
from the changelog.

A marker beside the table directory says a worker is using it; a clean exit removes it. A
start that finds it removes the tables, and Faust restores them from their changelogs.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


def marker_of(tabledir: Path) -> Path:
    return tabledir.parent / f"{tabledir.name}.in-use"


def discard_if_unclean(tabledir: Path) -> bool:
    """Removes the tables when the last run on them did not exit cleanly; True if it did."""
    marker = marker_of(tabledir)
    if not marker.exists():
        return False
    previous = marker.read_text(errors="replace").strip() or "?"
    log.warning("the last worker on %s (pid %s) did not stop cleanly: its tables may hold "
                "writes their changelogs lack; they are removed and restored from the "
                "changelogs", tabledir, previous)
    shutil.rmtree(tabledir, ignore_errors=True)
    marker.unlink(missing_ok=True)
    return True


@contextmanager
def tables_in_use(tabledir: Path) -> Iterator[None]:
    """Marks the tables in use for the block; an exit with status 0 unmarks them."""
    discard_if_unclean(tabledir)
    marker = marker_of(tabledir)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{os.getpid()}\n")
    try:
        yield
    except SystemExit as exc:
        if exc.code in (0, None):
            marker.unlink(missing_ok=True)
        raise
    else:
        marker.unlink(missing_ok=True)
