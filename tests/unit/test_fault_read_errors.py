"""The read-error fault (drills/faults/gray.py, ReadErrors) against a fake cluster: the objects it picks and
marks, the commands it sends, the order of its heal, its undo record through the ledger, its label, and
what the gray runbook measures from its reads. No Ceph here: tests/integration/test_read_errors_sandbox.py
runs it for real."""

from __future__ import annotations

import json
import re
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import rados

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emulators.fake import FSID, FakeBackend, make_target  # noqa: E402

from drills.faults.errors import FaultError, HealFailed  # noqa: E402
from drills.faults.gray import (  # noqa: E402
    READ_ERR_OPTION,
    MarkedRead,
    ReadErrors,
    marked_payload,
    must_reset_repairs,
    pick_names_with_primary,
    shards_repaired,
)
from drills.faults.guard import FaultGuard, PoolSpec  # noqa: E402
from drills.faults.ledger import FaultLedger  # noqa: E402
from drills.faults.session import FaultSession, fault_from_record, fault_type, heal_pending  # noqa: E402
from drills.telemetry.clusterlog import ClusterLogReading, LogEntry, excused, unexpected  # noqa: E402

POOL = "drills"


@dataclass
class FakeIoctx:
    cluster: "FakeCluster"

    def __enter__(self) -> "FakeIoctx":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def write_full(self, name: str, data: bytes) -> None:
        self.cluster.calls.append(("write_full", name))
        self.cluster.objects[name] = data

    def read(self, name: str, length: int, offset: int) -> bytes:
        self.cluster.calls.append(("read", name))
        if name in self.cluster.eio_reads:
            raise rados.IOError("EIO", errno=5)
        return self.cluster.objects[name][offset:offset + length]

    def remove_object(self, name: str) -> None:
        self.cluster.calls.append(("remove", name, self.cluster.option.get("osd.1")))
        if name not in self.cluster.objects:
            raise rados.ObjectNotFound("no such object", errno=2)
        del self.cluster.objects[name]


@dataclass
class FakeCluster:
    """Records every command; objects map to primaries by a crc of the name (6 OSDs)."""

    calls: list[tuple] = field(default_factory=list)
    objects: dict[str, bytes] = field(default_factory=dict)
    option: dict[str, str] = field(default_factory=dict)  # the config db: who -> value of the read-error option
    repaired: int = 0  # every OSD's num_shards_repaired
    inconsistent: set[str] = field(default_factory=set)
    eio_reads: set[str] = field(default_factory=set)
    erasure: bool = False

    def pools(self) -> list[dict[str, Any]]:
        return [{"pool_name": POOL, "type": 3 if self.erasure else 1}]

    def primary(self, name: str) -> int:
        return zlib.crc32(name.encode()) % 6

    def pg(self, name: str) -> str:
        return f"2.{zlib.crc32(name.encode()) % 8:x}"

    def mon_command(self, prefix: str, **args: Any) -> Any:
        if prefix == "osd map":
            return {"pgid": self.pg(args["object"]), "acting_primary": self.primary(args["object"])}
        if prefix == "config dump":
            return [{"section": who, "name": READ_ERR_OPTION, "value": v} for who, v in self.option.items()]
        self.calls.append((prefix, *sorted(args.items())))
        if prefix == "config set":
            self.option[args["who"]] = args["value"]
        elif prefix == "config rm":
            self.option.pop(args["who"], None)
        return ""

    def osd_running_config(self, osd_id: int, key: str) -> str:
        return self.option.get(f"osd.{osd_id}", "false")

    def osd_command(self, osd_id: int, prefix: str, **args: Any) -> Any:
        self.calls.append((f"osd.{osd_id}", prefix, *sorted(args.items())))
        return "ok"

    def mgr_command(self, prefix: str, **args: Any) -> Any:
        if prefix == "pg dump":
            return {"osd_stats": [{"osd": i, "num_shards_repaired": self.repaired} for i in range(6)]}
        if prefix == "pg ls-by-pool":
            pgs = {f"2.{i:x}" for i in range(8)}
            return {"pg_stats": [{"pgid": p, "state": "active+clean+inconsistent" if p in self.inconsistent else "active+clean",
                                  "stat_sum": {"num_scrub_errors": int(p in self.inconsistent)}} for p in sorted(pgs)]}
        self.calls.append((prefix, *sorted(args.items())))
        if prefix == "pg repair":
            self.inconsistent.discard(args["pgid"])
        return {}

    def config_get(self, who: str, key: str) -> str:
        return "10"

    def open_ioctx(self, pool: str) -> FakeIoctx:
        assert pool == POOL
        return FakeIoctx(self)

    def wait_for_osds(self, up: set[int] | None = None, down: set[int] | None = None, timeout: float = 120) -> None:
        self.calls.append(("wait_for_osds", sorted(up or ())))


def fault(target, cluster, fake, **kw) -> ReadErrors:
    return ReadErrors(target, "osd.1", pool=POOL, objects=3, cluster=cluster, resolve=fake.resolve, **kw)


def test_pure_helpers():
    assert pick_names_with_primary(["a", "b", "c", "d"], {"a": 1, "b": 2, "c": 1, "d": 1}.get, 1, 2) == ["a", "c"]
    assert pick_names_with_primary(["a"], lambda n: 0, 1, 2) == []
    p = marked_payload("x")
    assert len(p) == 4096 and p == marked_payload("x") != marked_payload("y")
    dump = [{"osd": 1, "num_shards_repaired": 4}]
    assert shards_repaired(dump, 1) == 4 and shards_repaired({"osd_stats": dump}, 1) == 4
    assert shards_repaired({"pg_map": {"osd_stats": dump}}, 1) == 4 and shards_repaired(dump, 2) is None
    assert must_reset_repairs(8, 11, 10) and not must_reset_repairs(8, 10, 10)
    assert not must_reset_repairs(12, 15, 10)  # over the line before the inject: not ours
    assert not must_reset_repairs(None, 15, 10)


def test_aims_at_one_osd_and_labels(target, fake):
    c = FakeCluster()
    f = fault(target, c, fake)
    assert (f.daemon, f.osd_id, f.label) == ("osd.1", 1, "read errors osd.1 (3 objects)")
    assert f.takes_down().daemons == frozenset() and f.host_names() == ["r0h0"]
    assert fault_type("read_errors") is ReadErrors
    with pytest.raises(FaultError, match="aim at one OSD; r0h0 is 2 OSDs"):
        ReadErrors(target, "r0h0")
    with pytest.raises(FaultError, match="at least one object"):
        ReadErrors(target, 1, objects=0)


def test_probe_reads_the_state_before_and_picks_objects_on_the_primary(target, fake):
    c = FakeCluster(option={"osd": "false"}, repaired=2)
    f = fault(target, c, fake)
    f.probe()
    assert len(f.names) == 3 and all(c.primary(n) == 1 and n.startswith(f.fault_id) for n in f.names)
    assert (f.config_before, f.running_before, f.repairs_before, f.warn_repairs) == (None, "false", 2, 10)
    assert c.calls == []  # nothing touched
    c.erasure = True
    with pytest.raises(FaultError, match="erasure-coded; read errors need a replicated pool"):
        fault(target, c, fake).probe()


def test_inject_writes_sets_the_option_and_marks_each_object(target, fake):
    c = FakeCluster()
    f = fault(target, c, fake)
    f.probe()
    f.inject()
    assert c.calls == [*[("write_full", n) for n in f.names],
                       ("config set", ("name", READ_ERR_OPTION), ("value", "true"), ("who", "osd.1")),
                       *[("osd.1", "injectdataerr", ("objname", n), ("pool", POOL)) for n in f.names]]
    assert all(c.objects[n] == marked_payload(n) for n in f.names)


def test_heal_removes_objects_while_the_option_is_on_then_restores_it(target, fake):
    c = FakeCluster()
    f = fault(target, c, fake)
    f.probe()
    f.inject()
    c.calls.clear()
    f.heal()
    # removed first, with the option still true: only then does BlueStore drop the marks
    assert c.calls[:3] == [("remove", n, "true") for n in f.names]
    assert c.calls[3] == ("config rm", ("name", READ_ERR_OPTION), ("who", "osd.1"))
    assert "osd.1" not in c.option and not c.objects and not f.injected
    assert f.repaired_pgs == [] and not f.restarted and [x for x in fake.calls if x[0] != "probe"] == []
    f.heal()  # idempotent: the objects are gone already


def test_heal_sets_back_a_value_the_config_db_had(target, fake):
    c = FakeCluster(option={"osd.1": "false"})
    f = fault(target, c, fake)
    f.probe()
    f.inject()
    f.heal()
    assert c.option == {"osd.1": "false"} and ("config set", ("name", READ_ERR_OPTION), ("value", "false"), ("who", "osd.1")) in c.calls


def test_heal_repairs_an_inconsistent_pg_of_its_objects_only(target, fake, monkeypatch):
    monkeypatch.setattr("drills.faults.gray.time.sleep", lambda s: None)
    c = FakeCluster()
    f = fault(target, c, fake)
    f.probe()
    f.inject()
    mine = c.pg(f.names[0])
    other = next(f"2.{i:x}" for i in range(8) if f"2.{i:x}" not in {c.pg(n) for n in f.names})
    c.inconsistent = {mine, other}
    f.heal()
    assert f.repaired_pgs == [mine] and ("pg repair", ("pgid", mine)) in c.calls
    assert ("pg repair", ("pgid", other)) not in c.calls and c.inconsistent == {other}


def test_heal_restarts_the_osd_only_when_its_repairs_crossed_the_warning(target, fake):
    c = FakeCluster(repaired=9)
    f = fault(target, c, fake)
    f.probe()
    f.inject()
    c.repaired = 12  # 3 reads repaired: over mon_osd_warn_num_repaired (10), OSD_TOO_MANY_REPAIRS
    f.heal()
    assert f.restarted and [x[:3] for x in fake.calls if x[0] != "probe"] == [("stop_daemon", "r0h0", "osd.1"),
                                                                             ("start_daemon", "r0h0", "osd.1")]
    assert ("wait_for_osds", [1]) in c.calls
    c2, fake2 = FakeCluster(repaired=3), FakeBackend()
    g = fault(target, c2, fake2)
    g.probe()
    g.inject()
    c2.repaired = 6
    g.heal()
    assert not g.restarted and [x for x in fake2.calls if x[0] != "probe"] == []


def test_heal_runs_every_step_and_names_what_failed(target, fake):
    c = FakeCluster()
    f = fault(target, c, fake)
    f.probe()
    f.inject()

    def refuse(prefix: str, **args: Any) -> Any:
        if prefix == "config rm":
            raise RuntimeError("mon refused")
        return FakeCluster.mon_command(c, prefix, **args)

    c.mon_command = refuse  # type: ignore[method-assign]
    with pytest.raises(HealFailed, match=r"read errors on osd\.1: set bluestore_debug_inject_read_err back: mon refused"):
        f.heal()
    assert not c.objects and f.injected  # the objects went anyway; still pending for `drill heal`


def test_undo_record_round_trips_through_the_ledger_and_drill_heal(target, fake, monkeypatch):
    c = FakeCluster(option={"osd.1": "false"}, repaired=1)
    f = fault(target, c, fake)
    ledger = FaultLedger(target.state_dir)
    session = FaultSession(target, guard=FaultGuard(target, FSID, [PoolSpec("rbd", 3, 2, "rack")]), resolve=fake.resolve,
                           ledger=ledger)
    armed: list[dict] = []
    real_inject = f.inject

    def inject() -> None:
        armed.extend(e.undo for e in FaultLedger(target.state_dir).pending())
        real_inject()

    f.inject = inject  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt), session:  # a crash: the session heals; here we look at the record
        session.inject(f)
        raise KeyboardInterrupt
    # armed before anything was touched, with the object names and the state to restore
    assert armed == [{"daemon": "osd.1", "where": "osd.1", "pool": POOL, "names": f.names, "config_before": "false",
                      "running_before": "false", "repairs_before": 1, "warn_repairs": 10}]

    # a runner killed with the fault in force: `drill heal` rebuilds the heal from the record alone
    rec = json.loads(json.dumps(f.ledger_entry("run-1").to_record()))
    ledger.arm(f.ledger_entry("run-1"))
    c.calls.clear()
    c.objects = {n: marked_payload(n) for n in f.names}
    c.option["osd.1"] = "true"
    rebuilt = fault_from_record(rec, target, resolve=fake.resolve)
    assert isinstance(rebuilt, ReadErrors) and rebuilt.label == f.label and rebuilt.manual_heal() == f.manual_heal()
    monkeypatch.setattr(ReadErrors, "_with_cluster", lambda self, fn: fn(c))
    report = heal_pending(target, resolve=fake.resolve, ledger=ledger)
    assert report.ok and ledger.pending() == [] and not c.objects and c.option == {"osd.1": "false"}


def test_manual_heal_names_the_objects_and_the_option(target, fake):
    c = FakeCluster()
    f = fault(target, c, fake)
    f.probe()
    text = f.manual_heal()
    assert all(n in text for n in f.names) and f"ceph config rm osd.1 {READ_ERR_OPTION}" in text
    assert "ceph pg repair" in text and "restart osd.1" in text


def test_read_marked_counts_ok_and_failed_reads(target, fake):
    c = FakeCluster()
    f = fault(target, c, fake)
    f.probe()
    f.inject()
    c.eio_reads = {f.names[1]}
    c.objects[f.names[2]] = b"other"
    reads = f.read_marked(c)
    assert [(r.name, r.ok) for r in reads] == [(f.names[0], True), (f.names[1], False), (f.names[2], False)]
    assert "IOError" in reads[1].error and "not what was written" in reads[2].error
    assert all(isinstance(r, MarkedRead) and r.seconds >= 0 for r in reads)


def test_expected_log_errors_excuse_only_the_faults_own_objects(target, fake):
    c = FakeCluster()
    f = fault(target, c, fake)
    f.probe()

    def entry(msg: str) -> LogEntry:
        return LogEntry(stamp=1.0, name="osd.1", seq=1, channel="cluster", level="ERR", message=msg)

    mine = entry(f"2.5 missing primary copy of 2:a1b2c3d4:::{f.names[0]}:head, will try copies on 3,5")
    other = entry("2.5 missing primary copy of 2:a1b2c3d4:::someone-else:head, will try copies on 3,5")
    scrub = entry(f"2.5 shard 1 soid 2:a1b2c3d4:::{f.names[0]}:head : candidate had a read error")
    reading = ClusterLogReading(start=0.0, end=2.0, entries=(mine, other, scrub))
    out = unexpected(reading, set(), f.expected_log_errors())
    assert len(out) == 2 and "someone-else" in out[0] and "candidate had a read error" in out[1]
    assert excused(reading, f.expected_log_errors()) == 1 and excused(reading, []) == 0
    assert all(re.compile(x) for x in f.expected_log_errors())


def test_the_gray_runbook_reads_the_marked_objects_twice_and_measures_them(tmp_path, monkeypatch) -> None:
    """eio_read through the gray runbook with a fake cluster: the marked objects are tracked for the final scrub,
    their [ERR] lines excused, read right after the inject and at the end of the hold, and counted."""
    from types import SimpleNamespace

    import drills.scenario as scenario
    from drills.catalogue import BY_NAME
    from drills.drill import DrillRecorder
    from drills.gray_runbook import GrayDrill
    from drills.scenario import Pace
    from drills.thresholds import load_thresholds
    from drills.timeline import Timeline, read_events

    t = make_target(str(tmp_path / "state"))
    monkeypatch.setattr(scenario, "measure_write_costs", lambda *a, **k: (1.0, 40.0))
    monkeypatch.setattr("drills.gray_runbook.REPORT_ALLOWANCE_S", 0.5)

    class Cluster(FakeCluster):
        def osd_running_config(self, osd_id: int, key: str) -> str:
            return "0.5" if key == "osd_op_complaint_time" else FakeCluster.osd_running_config(self, osd_id, key)

        def pg_summary(self):
            return SimpleNamespace(inactive=0, unfound_objects=0)

        def osds_up(self):
            return {o for h in t.hosts for o in h.osd_ids}

        osds_in = osds_up

        def wait_for_active(self, timeout=0):
            pass

        def wait_for_clean(self, timeout=0):
            pass

    c = Cluster()
    with Timeline(tmp_path / "run") as tl:
        rec = DrillRecorder("eio_read", tl, load_thresholds(), tmp_path / "run")
        rec.evidence = SimpleNamespace(saw_unfound=lambda n: None, log_watch=SimpleNamespace(subscribed=True),
                                       objects=[], expected_errors=[], track_objects=lambda pool, names: rec.evidence.objects.append((pool, names)))

        class Faults:
            def inject(self, fault, allow_unavailable=False):
                fault.probe()
                fault.inject()
                c.eio_reads = {fault.names[0]}  # reads of one object fail throughout; the others are served

            def heal(self, fault):
                fault.heal()

        pace = Pace(warmup=0, baseline=0, degraded=0, after=0, max_inactive=5, warmup_max=0, gray_hold=1.0)
        make = BY_NAME["eio_read"].make_fault

        def make_fault(target):
            f = make(target)
            f._cluster, f._resolve = c, FakeBackend().resolve
            return f

        g = GrayDrill(rec, c, t, Faults(), make_fault, "img", pace=pace)
        fault = g.make_fault(t)
        g._phases(fault, set(), pace, None)
        events = [e for e in read_events(tmp_path / "run") if e.kind == "eio.read"]
    assert fault.daemon == f"osd.{t.racks[0].hosts[-1].osd_ids[0]}" and len(fault.names) == 3
    assert rec.evidence.objects == [(t.cluster.rados_pool, fault.names)] and len(rec.evidence.expected_errors) == 3
    deg = rec.measurements["degraded"]
    assert (deg["eio_reads_ok"], deg["eio_reads_failed"]) == (4, 2)  # both passes
    assert deg["shards_repaired"] == 0 and deg["eio_read_time"] >= 0
    assert [e.data["read"] for e in events] == ["first"] * 3 + ["again"] * 3
    assert not fault.injected and not c.objects
    assert any(n.startswith("eio: 3 objects marked") for n in rec.notes) and any(n.startswith("eio heal:") for n in rec.notes)
