"""The worker's Faust app class: faust.App whose tables get bounded RocksDB options.

Its own module because mode gives every Service subclass a logger named after the module it
is defined in, with a NullHandler attached: defined in app/worker/app.py, that handler
swallowed the start-up lines logged there before Faust configures logging (the "schema
registry unavailable at start-up" line among them).
"""

from __future__ import annotations

from typing import Any

import faust

# Each table partition is its own RocksDB database. Faust's defaults give every one a 64 MB
# write buffer (three of them) and a 2 GB block cache, so with ten tables of twelve
# partitions the worker's memory had no useful bound: nothing is flushed to disk until a
# partition's buffer holds 64 MB. Small buffers flush early and bound what each database
# keeps in memory (docs/benchmarks/pipeline.md: peak RSS by backlog size).
TABLE_STORE_OPTIONS: dict[str, int] = {
    "write_buffer_size": 2 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "block_cache_size": 4 * 1024 * 1024,
}


class RecoveryFaustApp(faust.App):
    """faust.App whose tables, wherever they are declared, get TABLE_STORE_OPTIONS."""

    def Table(self, name: str, **kwargs: Any) -> Any:  # noqa: N802 (Faust's name)
        kwargs.setdefault("options", dict(TABLE_STORE_OPTIONS))  # Faust pops from it
        return super().Table(name, **kwargs)

    def GlobalTable(self, name: str, **kwargs: Any) -> Any:  # noqa: N802 (Faust's name)
        kwargs.setdefault("options", dict(TABLE_STORE_OPTIONS))
        return super().GlobalTable(name, **kwargs)


