"""Local tables a worker left without a clean exit are removed at the next start, so Faust
restores them from their changelogs (app/worker/table_state.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.worker.table_state import marker_of, tables_in_use


def tables(tmp_path: Path) -> Path:
    tabledir = tmp_path / "v1" / "tables"
    (tabledir / "incidents-0.db").mkdir(parents=True)
    (tabledir / "incidents-0.db" / "CURRENT").write_text("x")
    return tabledir


def test_a_clean_exit_keeps_the_tables_for_the_next_start(tmp_path):
    tabledir = tables(tmp_path)
    with pytest.raises(SystemExit), tables_in_use(tabledir):
        assert marker_of(tabledir).read_text().strip() == str(os.getpid())
        raise SystemExit(0)
    assert not marker_of(tabledir).exists()
    with tables_in_use(tabledir):
        assert (tabledir / "incidents-0.db" / "CURRENT").exists()


@pytest.mark.parametrize("leave", [SystemExit(3), RuntimeError("agent crashed"), None])
def test_tables_left_by_an_unclean_exit_are_removed_at_the_next_start(tmp_path, leave):
    tabledir = tables(tmp_path)
    if leave is None:  # SIGKILL: the block never ends
        marker_of(tabledir).write_text("4242\n")
    else:
        with pytest.raises(type(leave)), tables_in_use(tabledir):
            raise leave
    assert marker_of(tabledir).exists()
    with tables_in_use(tabledir):
        assert not tabledir.exists()  # Faust restores it from the changelogs
        assert marker_of(tabledir).exists()  # this run's own mark
    assert not marker_of(tabledir).exists()


def test_a_first_start_has_nothing_to_remove(tmp_path):
    tabledir = tmp_path / "v1" / "tables"
    with tables_in_use(tabledir):
        assert marker_of(tabledir).exists()
    assert not marker_of(tabledir).exists()
