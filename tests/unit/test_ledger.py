"""FaultLedger: persistence, torn lines, locking, replay order and failure handling."""

from __future__ import annotations

import json
import multiprocessing
import os

import pytest

from drills.faults.ledger import FaultLedger, LedgerBusy, LedgerEntry


def entry(fid: str, **undo: object) -> LedgerEntry:
    return LedgerEntry(fault_id=fid, kind="power_cut", label=f"cut {fid}", undo=dict(undo), manual=f"power on {fid} by hand")


def test_armed_then_healed_is_not_pending(tmp_path):
    led = FaultLedger(tmp_path)
    led.arm(entry("a", hosts=["h1"]))
    led.arm(entry("b", hosts=["h2"]))
    assert [e.fault_id for e in led.pending()] == ["a", "b"]
    led.mark_healed("a")
    pend = FaultLedger(tmp_path).pending()  # a fresh reader (another process after a crash)
    assert [e.fault_id for e in pend] == ["b"]
    assert pend[0].undo == {"hosts": ["h2"]}
    assert pend[0].manual == "power on b by hand"
    assert pend[0].pid == os.getpid() and pend[0].t > 0


def test_record_format_has_no_surprises(tmp_path):
    led = FaultLedger(tmp_path)
    led.arm(entry("a", hosts=["h1"]))
    led.mark_healed("a")
    lines = [json.loads(x) for x in (tmp_path / "fault-ledger.jsonl").read_text().splitlines()]
    assert lines[0]["op"] == "armed" and lines[0]["v"] == 1 and lines[0]["kind"] == "power_cut"
    assert set(lines[0]) == {"v", "op", "t", "fault_id", "kind", "label", "target", "run_id", "pid", "undo", "manual"}
    assert lines[1] == {"v": 1, "op": "healed", "t": lines[1]["t"], "fault_id": "a"}


def test_torn_last_line_is_tolerated_and_next_record_still_parses(tmp_path):
    led = FaultLedger(tmp_path)
    led.arm(entry("a"))
    with open(led.path, "a") as f:
        f.write('{"v": 1, "op": "healed", "fault_id": "a", "t"')  # crash mid-write: no newline
    assert [e.fault_id for e in led.pending()] == ["a"]
    led.arm(entry("b"))  # must start on a new line, not glue onto the torn one
    assert [e.fault_id for e in led.pending()] == ["a", "b"]


def test_replay_heals_newest_first_and_continues_after_a_failure(tmp_path):
    led = FaultLedger(tmp_path)
    for fid in ("a", "b", "c"):
        led.arm(entry(fid))
    order: list[str] = []

    def undo(e: LedgerEntry) -> None:
        order.append(e.fault_id)
        if e.fault_id == "b":
            raise RuntimeError("BMC said no")

    report = led.replay(undo)
    assert order == ["c", "b", "a"]
    assert [e.fault_id for e in report.healed] == ["c", "a"]
    assert len(report.failed) == 1 and report.failed[0].entry.fault_id == "b"
    assert "BMC said no" in str(report.failed[0]) and "power on b by hand" in report.summary()
    pend = led.pending()
    assert [e.fault_id for e in pend] == ["b"]
    assert pend[0].errors == ("RuntimeError: BMC said no",)
    # A second replay only retries what is left.
    again = led.replay(lambda e: None)
    assert [e.fault_id for e in again.healed] == ["b"] and led.pending() == []


def _hold_lock(state_dir: str, ready, done) -> None:
    led = FaultLedger(state_dir)
    led.acquire()
    ready.set()
    done.wait(10)
    led.release()


def test_lock_excludes_a_second_runner(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, done))
    p.start()
    try:
        assert ready.wait(10)
        led = FaultLedger(tmp_path)
        with pytest.raises(LedgerBusy, match=rf"pid {p.pid}"):
            led.arm(entry("x"))
        assert led.pending() == []  # nothing written
    finally:
        done.set()
        p.join(10)
    FaultLedger(tmp_path).arm(entry("x"))  # free again


def test_lock_is_reentrant_within_one_ledger(tmp_path):
    led = FaultLedger(tmp_path)
    with led.locked():
        led.arm(entry("a"))  # takes the lock again inside
        assert led.held
    assert not led.held
