"""The lag collector's child process leaves when its worker is gone, also when the worker
died before the child had started (the child is re-parented to init before it can look)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run_child(parent_expr: str) -> subprocess.CompletedProcess:
    code = textwrap.dedent(f"""
        import os, threading, time
        from app.lag import isolated
        threading.Thread(target=isolated._exit_with_parent, args=({parent_expr},),
                         daemon=True).start()
        time.sleep(5)
        print("still here")
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)


def test_a_child_whose_worker_is_already_gone_leaves_at_once():
    # The recorded worker pid is not this process's parent: the worker died before.
    done = run_child("os.getppid() + 1_000_000")
    assert done.returncode == 0
    assert "still here" not in done.stdout


def test_a_child_whose_worker_lives_stays():
    done = run_child("os.getppid()")
    assert "still here" in done.stdout
