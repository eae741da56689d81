"""Every table of the worker, wherever it is declared, gets the bounded RocksDB options."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import Settings
from app.worker.app import build
from app.worker.faust_app import TABLE_STORE_OPTIONS


@pytest.fixture
def recovery(tmp_path: Path):
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1", data_dir=tmp_path,
                        topic_prefix="unit.")
    return build(settings)


def test_every_table_store_has_small_write_buffers_and_cache(recovery) -> None:
    tables = list(recovery.app.tables.values())
    assert len(tables) >= 10  # the incident table, the counts, every scenario's tables
    for table in tables:
        options = table.data.rocksdb_options
        assert options.write_buffer_size == TABLE_STORE_OPTIONS["write_buffer_size"], table
        assert options.max_write_buffer_number == TABLE_STORE_OPTIONS["max_write_buffer_number"]
        assert options.block_cache_size == TABLE_STORE_OPTIONS["block_cache_size"], table


def test_the_app_class_leaves_the_worker_modules_start_up_logging_alone(recovery) -> None:
    # mode attaches a NullHandler to the logger of the module a Service subclass lives in;
    # app/worker/app.py logs start-up problems before Faust configures logging.
    import logging

    assert logging.getLogger("app.worker.app").handlers == []
