"""Samplers: a failed sample is a gap (null), never a zero; stand-in cluster and memory sources."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from drills.target import Access, Cluster, Host, Rack, Target
from drills.telemetry.samplers import (CLUSTER_GAP_METRICS, ClusterSampler, DaemonMemory, LocalMemoryReader,
                                       MemorySampler, RemoteMemoryReader, daemon_of_cmdline,
                                       parse_memory_probe, read_cluster)
from drills.timeline import Sample, Timeline, read_events, read_series


def _status(degraded: int | None = None, up: int = 3) -> dict[str, Any]:
    pgmap: dict[str, Any] = {"pgs_by_state": [{"state_name": "active+clean", "count": 30},
                                              {"state_name": "peering", "count": 2}], "num_pgs": 32}
    if degraded is not None:  # Ceph leaves degraded_* out of the pgmap when nothing is degraded
        pgmap.update(degraded_objects=degraded, degraded_ratio=0.25)
    return {"pgmap": pgmap, "osdmap": {"osdmap": {"num_up_osds": up, "num_in_osds": 3}}}


def _dump(up: set[int]) -> dict[str, Any]:
    return {"osds": [{"osd": i, "up": int(i in up)} for i in range(3)], "flags_set": ["sortbitwise"]}


class StandInCluster:
    """status()/osd_dump() from queues of replies; an Exception in a queue is raised (a failed mon call)."""

    def __init__(self, statuses: list[Any], dumps: list[Any]):
        self.statuses = statuses
        self.dumps = dumps

    def status(self) -> dict[str, Any]:
        return self._next(self.statuses)

    def osd_dump(self) -> dict[str, Any]:
        return self._next(self.dumps)

    @staticmethod
    def _next(queue: list[Any]) -> Any:
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, Exception):
            raise item
        return item


def _target() -> Target:
    hosts = (Host("h1", daemons=("osd.0", "osd.1"), access=Access(kind="ssh", host="h1")),
             Host("h2", daemons=("osd.2",), access=Access(kind="ssh", host="h2")))
    return Target(Cluster("c", "fsid", "/etc/ceph/ceph.conf", "/k", deployment="package"), state_dir="/tmp",
                  racks=(Rack("r1", hosts),))


def _by_time(samples: list[Sample], metric: str, **labels: str) -> list[float | None]:
    return [s.value for s in sorted(samples, key=lambda s: s.t)
            if s.metric == metric and all(s.labels.get(k) == v for k, v in labels.items())]


def _step(sampler: Any, now: float) -> None:
    """One iteration of Sampler._run without the thread: sample, or record the failure."""
    try:
        sampler.sample_once(now)
    except Exception as e:  # noqa: BLE001
        sampler.on_failure(now, e)


def test_read_cluster_absent_pgmap_keys_are_zero_but_absent_osd_counts_are_gaps() -> None:
    r = read_cluster({"pgmap": {"num_pgs": 8}, "osdmap": {}}, _dump({0, 1, 2}))
    assert r.scalars["cluster.degraded_objects"] == 0 and r.scalars["cluster.degraded_ratio"] == 0
    assert r.scalars["cluster.osds_up"] is None and r.scalars["cluster.osds_in"] is None
    r = read_cluster(_status(degraded=120, up=2), _dump({0, 2}))
    assert r.scalars["cluster.degraded_objects"] == 120 and r.scalars["cluster.osds_up"] == 2
    assert r.up == {0, 2} and r.pgs_by_state == {"active+clean": 30, "peering": 2}
    assert r.scalars["cluster.pgs_inactive"] == 2
    with pytest.raises(KeyError):
        read_cluster({"health": {}}, _dump({0}))  # a reply without a pgmap is a failed sample


def test_failed_cluster_sample_is_a_gap_never_zero(tmp_path: Path) -> None:
    tl = Timeline(tmp_path)
    cluster = StandInCluster([_status(degraded=5), TimeoutError("mon timed out"), _status(degraded=7)],
                             [_dump({0, 1, 2})])
    sampler = ClusterSampler(tl, cluster)  # type: ignore[arg-type]
    for now in (100.0, 101.0, 102.0):
        _step(sampler, now)
    tl.close()
    series = read_series(tmp_path)
    for metric in CLUSTER_GAP_METRICS:
        values = _by_time(series, metric)
        assert len(values) == 3 and values[1] is None, metric
    assert _by_time(series, "cluster.degraded_objects") == [5, None, 7]
    assert _by_time(series, "cluster.pgs", state="active+clean") == [30, None, 30]
    gaps = [e for e in read_events(tmp_path) if e.kind == "sampler.gap"]
    assert len(gaps) == 1 and "mon timed out" in gaps[0].data["error"]


def test_osd_dump_failing_after_status_writes_gaps_only(tmp_path: Path) -> None:
    # status() answered, osd dump did not: nothing of the half-read sample may be written as data
    tl = Timeline(tmp_path)
    cluster = StandInCluster([_status(degraded=9)], [_dump({0, 1, 2}), ConnectionError("no mon"), _dump({0, 1, 2})])
    sampler = ClusterSampler(tl, cluster)  # type: ignore[arg-type]
    for now in (1.0, 2.0, 3.0):
        _step(sampler, now)
    tl.close()
    assert _by_time(read_series(tmp_path), "cluster.degraded_objects") == [9, None, 9]


def test_osd_down_and_up_events(tmp_path: Path) -> None:
    tl = Timeline(tmp_path)
    cluster = StandInCluster([_status()], [_dump({0, 1, 2}), _dump({0, 2}), _dump({0, 2}), _dump({0, 1, 2})])
    sampler = ClusterSampler(tl, cluster)  # type: ignore[arg-type]
    for now in (10.0, 11.0, 12.0, 13.0):
        _step(sampler, now)
    tl.close()
    events = [(e.kind, e.label, e.t) for e in read_events(tmp_path) if e.kind.startswith("cluster.osd")]
    assert events == [("cluster.osd_down", "osd.1", 11.0), ("cluster.osd_up", "osd.1", 13.0)]


def _status_at(epoch: int, up: int = 3) -> dict[str, Any]:
    status = _status(up=up)
    status["osdmap"]["osdmap"]["epoch"] = epoch
    return status


def test_osd_dump_only_when_the_osdmap_epoch_moves(tmp_path: Path) -> None:
    tl = Timeline(tmp_path)
    # epoch 5 three times (one dump), 6: osd.1 went down (a second dump), 6 again, 7: flags changed
    cluster = StandInCluster([_status_at(5), _status_at(5), _status_at(5), _status_at(6, up=2), _status_at(6, up=2),
                              _status_at(7, up=2)],
                             [_dump({0, 1, 2}), _dump({0, 2}), {**_dump({0, 2}), "flags_set": ["noout"]}])
    dumps_before = len(cluster.dumps)
    sampler = ClusterSampler(tl, cluster)  # type: ignore[arg-type]
    for now in range(6):
        _step(sampler, float(now))
    tl.close()
    assert sampler.osd_dumps_read == 3 and dumps_before == 3
    events = [(e.kind, e.label, e.t) for e in read_events(tmp_path) if e.kind.startswith("cluster.")]
    assert events == [("cluster.flags", "sortbitwise", 0.0), ("cluster.osd_down", "osd.1", 3.0),
                      ("cluster.flags", "noout", 5.0)]
    assert _by_time(read_series(tmp_path), "cluster.osds_up") == [3, 3, 3, 2, 2, 2]


def test_status_without_epoch_reads_the_osd_dump_every_sample(tmp_path: Path) -> None:
    tl = Timeline(tmp_path)
    cluster = StandInCluster([_status()], [_dump({0, 1, 2})])
    sampler = ClusterSampler(tl, cluster)  # type: ignore[arg-type]
    for now in range(3):
        _step(sampler, float(now))
    tl.close()
    assert sampler.osd_dumps_read == 3


def test_sampler_thread_survives_failures_and_writes_gaps(tmp_path: Path) -> None:
    tl = Timeline(tmp_path)
    cluster = StandInCluster([RuntimeError("rados: ETIMEDOUT")], [_dump({0})])
    sampler = ClusterSampler(tl, cluster, interval=0.05)  # type: ignore[arg-type]
    with sampler:
        time.sleep(0.3)
    tl.close()
    assert sampler.samples_failed >= 3 and sampler.samples_taken == 0
    values = _by_time(read_series(tmp_path), "cluster.osds_up")
    assert values and all(v is None for v in values)


def test_memory_gaps_for_missing_daemon_and_failing_lookup(tmp_path: Path) -> None:
    import os

    def pid_of(daemon: str) -> int | None:
        if daemon == "osd.0":
            return os.getpid()  # a live process: real figures
        if daemon == "osd.1":
            return None  # not running (power cut)
        raise OSError("pid file unreadable")

    tl = Timeline(tmp_path)
    sampler = MemorySampler(tl, _target(), pid_of, rollup_interval=1.0)  # PSS/USS every sample
    _step(sampler, 50.0)
    tl.close()
    series = read_series(tmp_path)
    rss0 = _by_time(series, "rss.bytes", daemon="osd.0")
    assert len(rss0) == 1 and rss0[0] is not None and rss0[0] > 1 << 20
    pss0, uss0 = _by_time(series, "pss.bytes", daemon="osd.0"), _by_time(series, "uss.bytes", daemon="osd.0")
    assert pss0[0] is not None and uss0[0] is not None and 0 < uss0[0] <= pss0[0] <= rss0[0]
    assert _by_time(series, "rss.bytes", daemon="osd.1") == [None]
    assert _by_time(series, "rss.bytes", daemon="osd.2") == [None]
    assert _by_time(series, "pss.bytes", daemon="osd.1") == [None]
    assert _by_time(series, "uss.bytes", daemon="osd.2") == [None]


def test_pss_uss_at_the_lower_rate_spread_over_samples_rss_every_sample(tmp_path: Path) -> None:
    target = Target(Cluster("c", "fsid", "/etc/ceph/ceph.conf", "/k", deployment="package"), state_dir="/tmp",
                    racks=(Rack("r1", (Host("h1", daemons=tuple(f"osd.{i}" for i in range(6)),
                                            access=Access(kind="ssh", host="h1")),)),))
    asked: list[set[str]] = []

    class Reader:
        def read(self, daemons: list[str], rollup_of: set[str] = set()) -> dict[str, DaemonMemory | None]:
            asked.append(set(rollup_of))
            return {d: DaemonMemory(100, 60 if d in rollup_of else None, 50 if d in rollup_of else None)
                    for d in daemons}

    tl = Timeline(tmp_path)
    sampler = MemorySampler(tl, target, reader=Reader(), interval=1.0, rollup_interval=3.0)
    for now in range(6):
        _step(sampler, float(now))
    tl.close()
    # 6 daemons, PSS every 3 samples: 2 daemons a sample, each daemon twice in 6 samples
    assert [len(a) for a in asked] == [2, 2, 2, 2, 2, 2]
    assert asked[0] == asked[3] and asked[0] | asked[1] | asked[2] == {f"osd.{i}" for i in range(6)}
    series = read_series(tmp_path)
    for i in range(6):
        assert _by_time(series, "rss.bytes", daemon=f"osd.{i}") == [100] * 6
        assert _by_time(series, "pss.bytes", daemon=f"osd.{i}") == [60, 60]  # written when read, not as gaps
        assert _by_time(series, "uss.bytes", daemon=f"osd.{i}") == [50, 50]


def test_local_reader_keeps_the_pid_until_the_process_is_gone(tmp_path: Path) -> None:
    import subprocess

    children = [subprocess.Popen(["sleep", "30"]) for _ in range(2)]
    lookups: list[str] = []
    current = {"pid": children[0].pid}

    def pid_of(daemon: str) -> int | None:
        lookups.append(daemon)
        return current["pid"]

    reader = LocalMemoryReader(pid_of)
    try:
        first = reader.read(["osd.0"], rollup_of={"osd.0"})["osd.0"]
        second = reader.read(["osd.0"])["osd.0"]
        assert first is not None and first.rss > 0 and first.pss is not None and first.uss is not None
        assert second is not None and second.pss is None  # not asked: not read
        assert lookups == ["osd.0"]  # looked up once, then the open statm is read
        children[0].kill()
        children[0].wait()
        current["pid"] = children[1].pid  # the daemon restarted with a new pid
        assert reader.read(["osd.0"])["osd.0"] is None  # the old process is gone: a gap, not its pid reused
        again = reader.read(["osd.0"])["osd.0"]
        assert again is not None and again.rss > 0 and lookups == ["osd.0", "osd.0"]
    finally:
        reader.close()
        for c in children:
            c.kill()
            c.wait()


def test_zombie_reads_as_not_running() -> None:
    import subprocess

    child = subprocess.Popen(["true"])
    time.sleep(0.2)  # exited, not reaped: a zombie with no memory
    reader = LocalMemoryReader(lambda d: child.pid)
    try:
        assert reader.read(["osd.0"]) == {"osd.0": None}
    finally:
        child.wait()
        reader.close()


def test_memory_reader_exception_is_a_gap_for_every_daemon(tmp_path: Path) -> None:
    class BrokenReader:
        def read(self, daemons: list[str], rollup_of: set[str] = set()) -> dict[str, DaemonMemory | None]:
            raise RuntimeError("boom")

    tl = Timeline(tmp_path)
    sampler = MemorySampler(tl, _target(), reader=BrokenReader(), rollup_interval=1.0)
    _step(sampler, 1.0)
    tl.close()
    series = read_series(tmp_path)
    for metric in ("rss.bytes", "pss.bytes", "uss.bytes"):
        assert {s.labels["daemon"]: s.value for s in series if s.metric == metric} == \
            {"osd.0": None, "osd.1": None, "osd.2": None}


PROBE_OUTPUT = """\
2101|812344|790001 788000|/usr/bin/ceph-osd -f --cluster ceph --id 0 --setuser ceph --setgroup ceph
2102|||
2200|65000|60000 59000|/usr/bin/ceph-osd -n osd.1 -f --setuser ceph --setgroup ceph --default-log-to-file=false
3000|4000||/usr/bin/radosgw -f --cluster ceph --name client.rgw.a --setuser ceph
garbage line
"""


def test_parse_memory_probe_and_daemon_names() -> None:
    mem = parse_memory_probe(PROBE_OUTPUT)
    assert mem["osd.0"] == DaemonMemory(812344 * 1024, 790001 * 1024, 788000 * 1024)
    assert mem["osd.1"].rss == 65000 * 1024
    assert mem["client.rgw.a"] == DaemonMemory(4000 * 1024, None, None)  # smaps_rollup unreadable
    assert set(mem) == {"osd.0", "osd.1", "client.rgw.a"}
    assert daemon_of_cmdline("ceph-osd -c /x/ceph.conf -i 4") == "osd.4"
    assert daemon_of_cmdline("/usr/bin/ceph-mon -f --cluster ceph --id=a") == "mon.a"
    assert daemon_of_cmdline("/usr/bin/python3 ceph-osd -i 1") is None
    assert daemon_of_cmdline("") is None


def test_remote_reader_one_probe_per_host_and_gaps_for_unreachable_host() -> None:
    target = _target()
    hosts = {d: h for h in target.hosts for d in h.daemons}
    calls: list[str] = []

    def run(host: Host, command: str) -> str:
        calls.append(host.name)
        if host.name == "h2":
            raise ConnectionError("ssh: no route to host")
        return PROBE_OUTPUT

    reader = RemoteMemoryReader(run, hosts)
    mem = reader.read(["osd.0", "osd.1", "osd.2"])
    assert sorted(calls) == ["h1", "h2"]
    assert mem["osd.0"] is not None and mem["osd.0"].rss == 812344 * 1024
    assert mem["osd.2"] is None  # host unreachable: a gap, not 0


def test_local_reader_vanished_process_is_a_gap() -> None:
    reader = LocalMemoryReader(lambda d: 2 ** 22 + 12345)  # a pid that does not exist
    assert reader.read(["osd.0"]) == {"osd.0": None}
