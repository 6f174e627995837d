"""Per-host facts: OOM kills are read on the hosts that run Ceph daemons; unreadable is None, never 0.
Also: osd_memory_target never falls back to a guessed 4 GiB, and a deep scrub that cannot finish says which PGs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from drills.hostfacts import (VMSTAT_OOM_COMMAND, HostCount, NotCounted, OomWatch, counted, machine_oom_kills, oom_kill_readings,
                              oom_kills_between, oom_kills_by_host, parse_vmstat_file, parse_vmstat_oom)
from drills.preflight.checks import FAIL, NotMeasured, run_preflight, running_osd_memory_target
from drills.sandbox.cgroups import CgroupMemory, HostCgroup
from drills.target import Access, Cluster, Host, Rack, Target


def ssh_host(name: str, daemons=("osd.0",)) -> Host:
    return Host(name, "10.0.0.1", tuple(daemons), Access(kind="ssh", host=f"{name}.example"))


def local_host(name: str, daemons=("osd.0",)) -> Host:
    return Host(name, "10.0.0.2", tuple(daemons), Access(kind="local", netns=f"x-{name}"))


def target(*hosts: Host, service: tuple[Host, ...] = (), deployment: str = "package") -> Target:
    return Target(Cluster("c", "fsid", "/nonexistent/ceph.conf", "/nonexistent/keyring", deployment=deployment), "/tmp",
                  racks=(Rack("r1", tuple(hosts)),), service_hosts=service)


def test_vmstat_counter_parse():
    assert parse_vmstat_oom("17\n") == 17
    assert parse_vmstat_oom("absent\n") is None
    assert parse_vmstat_oom("") is None
    assert "/proc/vmstat" in VMSTAT_OOM_COMMAND


def test_ssh_hosts_are_read_over_ssh_and_an_unreachable_one_is_none_with_why():
    calls = []

    def run(host: Host, cmd: str) -> str:
        calls.append((host.name, cmd))
        if host.name == "down":
            raise OSError("connection refused")
        return {"a": "3\n", "old": "absent\n"}[host.name]

    t = target(ssh_host("a"), ssh_host("down"), ssh_host("old"), ssh_host("empty", daemons=()))
    readings = oom_kill_readings(t, ssh_run=run)
    assert readings["a"].value == 3 and readings["a"].source == "ssh /proc/vmstat"
    assert readings["down"].value is None and "connection refused" in readings["down"].why
    assert readings["old"].value is None and "4.13" in readings["old"].why
    assert "empty" not in readings  # runs no Ceph daemon
    assert oom_kills_by_host(t, ssh_run=run) == {"a": 3, "down": None, "old": None}
    assert {c[1] for c in calls} == {VMSTAT_OOM_COMMAND}


@dataclass
class FakeCgroup:
    oom: int | None
    path: Path = Path("/sys/fs/cgroup/memory/ceph-drills-x/h")

    def read(self) -> CgroupMemory:
        return CgroupMemory(0, 0, 0, None, self.oom)


def test_sandbox_hosts_use_their_cgroup_and_a_host_without_one_is_not_measured(monkeypatch):
    import drills.hostfacts as hf

    monkeypatch.setattr(hf, "_sandbox_prefix", lambda t: "x")
    cgroups: dict[str, Any] = {"r1h1": FakeCgroup(2), "r1h2": FakeCgroup(None)}
    t = target(local_host("r1h1"), local_host("r1h2"), service=(local_host("svc", ("mon.a", "mgr.x")),), deployment="sandbox")
    readings = oom_kill_readings(t, cgroup_of=lambda prefix, host: cgroups.get(host))
    assert readings["r1h1"].value == 2 and readings["r1h1"].source.startswith("cgroup ")
    assert readings["r1h2"].value is None and "no oom_kill counter" in readings["r1h2"].why
    assert readings["svc"].value is None and "no memory cgroup" in readings["svc"].why


def test_a_local_host_outside_a_sandbox_is_not_measured():
    t = target(local_host("h1"))
    r = oom_kill_readings(t)["h1"]
    assert r.value is None and "outside a sandbox" in r.why


def test_this_machines_counter_and_a_reading_that_must_be_counted(tmp_path):
    assert parse_vmstat_file("pgfault 12\noom_kill 7\nfoo 1\n") == 7
    assert parse_vmstat_file("pgfault 12\n") is None  # a kernel before 4.13
    vmstat = tmp_path / "vmstat"
    vmstat.write_text("oom_kill 3\n")
    assert machine_oom_kills(str(vmstat)) == 3
    assert machine_oom_kills(str(tmp_path / "missing")) is None  # not measured, never 0
    assert counted(HostCount("a", 0, "ssh /proc/vmstat")) == 0
    with pytest.raises(NotCounted, match="host b: OOM kills cannot be counted: unreachable"):
        counted(HostCount("b", None, "", "unreachable"))


def test_an_ssh_host_is_read_through_the_given_host_access():
    from drills.hostaccess import CommandResult

    class Access:
        def __init__(self) -> None:
            self.calls: list[tuple[str, str]] = []

        def run(self, host: Host, command: str, **kw: Any) -> CommandResult:
            self.calls.append((host.name, command))
            return CommandResult(0, "5\n", "")

    access = Access()
    t = target(ssh_host("a"))
    assert oom_kills_by_host(t, access=access) == {"a": 5}
    assert access.calls == [("a", VMSTAT_OOM_COMMAND)]


def test_kills_between_two_readings():
    assert oom_kills_between({"a": 1, "b": None, "c": 5, "d": 0}, {"a": 3, "b": 2, "c": 1}) == {"a": 2, "b": None, "c": None, "d": None}


def test_cgroup_without_an_oom_counter_reads_none_and_cannot_be_watched(tmp_path):
    cg = HostCgroup(tmp_path, 1)
    (tmp_path / "cgroup.procs").write_text("")
    (tmp_path / "memory.usage_in_bytes").write_text("100\n")
    (tmp_path / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (tmp_path / "memory.max_usage_in_bytes").write_text("200\n")
    (tmp_path / "memory.stat").write_text("total_inactive_file 10\ntotal_rss 50\n")
    (tmp_path / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\n")  # a kernel before 4.13
    m = cg.read()
    assert m.oom_kills is None and m.peak == 200
    with pytest.raises(NotCounted, match="host h: OOM kills cannot be counted: .*no oom_kill counter"):
        OomWatch({"h": cg}, {"h": []}, pid_of=lambda d: None, rss_of=lambda p: 0)
    (tmp_path / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 4\n")
    assert cg.read().oom_kills == 4


def test_v2_cgroup_without_memory_peak_has_no_peak(tmp_path):
    cg = HostCgroup(tmp_path, 2)
    for name, text in {"memory.current": "100\n", "memory.max": "max\n", "memory.stat": "anon 60\ninactive_file 10\n",
                       "memory.events": "oom 0\noom_kill 1\n"}.items():
        (tmp_path / name).write_text(text)
    m = cg.read()
    assert m.peak is None and m.usage == 100 and m.oom_kills == 1


# --- osd_memory_target: never a guessed default ------------------------------------------------------


class NoOsdAnswers:
    def __init__(self, up: set[int]):
        self.up = up

    def osds_up(self) -> set[int]:
        return self.up

    def osd_command(self, osd: int, prefix: str, **kw: Any) -> Any:
        raise TimeoutError(f"osd.{osd} did not answer")


def test_osd_memory_target_not_read_raises_instead_of_4_gib():
    with pytest.raises(NotMeasured, match="no up OSD answered.*osd.1 did not answer"):
        running_osd_memory_target(NoOsdAnswers({1, 2}))
    with pytest.raises(NotMeasured, match="no OSD is up"):
        running_osd_memory_target(NoOsdAnswers(set()))


def test_preflight_fails_the_memory_check_when_osd_memory_target_is_unknown():
    h = ssh_host("h1")
    t = target(h)

    def run(host: Host, cmd: str) -> tuple[int, str]:
        if "meminfo" in cmd:
            return 0, "MemTotal: 65536000 kB\nSwapTotal: 1024 kB\n"
        if "overcommit" in cmd:
            return 0, "0\n50\n"
        return 0, ""

    report = run_preflight(t, run, None, "osd_memory_target not read: no OSD is up to ask")
    memory = next(c for c in report.checks if c.check == "memory")
    assert memory.status == FAIL and "no OSD is up" in memory.detail
    assert not report.ok
