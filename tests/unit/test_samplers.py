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
    sampler = MemorySampler(tl, _target(), pid_of)
    _step(sampler, 50.0)
    tl.close()
    series = read_series(tmp_path)
    rss0 = _by_time(series, "rss.bytes", daemon="osd.0")
    assert len(rss0) == 1 and rss0[0] is not None and rss0[0] > 1 << 20
    assert _by_time(series, "rss.bytes", daemon="osd.1") == [None]
    assert _by_time(series, "rss.bytes", daemon="osd.2") == [None]
    assert _by_time(series, "pss.bytes", daemon="osd.1") == [None]


def test_memory_reader_exception_is_a_gap_for_every_daemon(tmp_path: Path) -> None:
    class BrokenReader:
        def read(self, daemons: list[str]) -> dict[str, DaemonMemory | None]:
            raise RuntimeError("boom")

    tl = Timeline(tmp_path)
    sampler = MemorySampler(tl, _target(), reader=BrokenReader())
    _step(sampler, 1.0)
    tl.close()
    series = read_series(tmp_path)
    assert {s.labels["daemon"]: s.value for s in series if s.metric == "rss.bytes"} == \
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
