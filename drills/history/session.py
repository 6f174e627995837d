"""What a session does with the history at its end, guarded: nothing here can change a run's result."""

from __future__ import annotations

from pathlib import Path

from drills.history.store import HistoryError, record_run
from drills.notify import NotifyConfig, notify_run_end, record_note


def after_run(run_dir: str | Path, notify: NotifyConfig | None = None) -> list[str]:
    """Record the run in reports/history.sqlite, then notify; notes for what failed (also in notifications.jsonl).

    Call it after summary.json is written (the webhook sends its verdict).
    """
    notes: list[str] = []
    try:
        record_run(run_dir)
    except (HistoryError, OSError) as e:
        notes.append(f"history: the run was not recorded ({e}); `drill history import` records it later")
        record_note(run_dir, "history", False, notes[-1])
    except Exception as e:  # noqa: BLE001 - a bug in the history must not turn a passed run into an error
        notes.append(f"history: {type(e).__name__}: {e}")
        record_note(run_dir, "history", False, notes[-1])
    if notify is not None and notify.enabled:
        notes += notify_run_end(notify, run_dir)
    return notes
