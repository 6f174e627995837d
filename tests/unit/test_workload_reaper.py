"""A crashed runner's workload processes are found and stopped (drills/workloads/reaper.py).

Real processes throughout: fio (null engine: no cluster needed) started by a real FioRunner in a
runner process that is then killed with SIGKILL, and plain child processes for the edge cases.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from drills.target import dump_target
from drills.workloads.reaper import TAG_ENV, WorkloadProcesses, new_tag

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emulators.fake import make_target  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

RUNNER = textwrap.dedent("""
    import sys, time
    from drills.workloads.fio import FioJob, start_job
    from drills.workloads.reaper import TAG_ENV, WorkloadProcesses, new_tag
    job = FioJob(name="reaper-null", rw="randwrite", bs="4k", iodepth=1, runtime=3600, size="16M", ioengine="null")
    fio = start_job(job, processes=WorkloadProcesses(sys.argv[1]))
    print(fio._proc.pid, flush=True)
    time.sleep(3600)
""")


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _fio_processes(argv: tuple[str, ...]) -> list[int]:
    """Live processes with fio's command line: its main process and its forked job (which calls setsid(),
    so neither the parent pid nor the process group finds it once the main process is gone). The job
    file's path is a fresh temporary directory: the command line is this test's fio alone."""
    out = []
    for p in psutil.process_iter(["status", "cmdline"]):
        if p.info["status"] != psutil.STATUS_ZOMBIE and tuple(p.info["cmdline"] or ()) == argv:
            out.append(p.pid)
    return out


def _until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def crashed_runner(tmp_path: Path):
    """A runner that started fio, then was killed with SIGKILL: (state_dir, fio pid, fio's argv)."""
    state = tmp_path / "state"
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, str(state)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    fio_pid = int(runner.stdout.readline())
    runner.kill()
    runner.wait()
    [record] = WorkloadProcesses(state).records()
    yield state, fio_pid, record.argv
    for pid in _fio_processes(record.argv):  # the test failed: do not leave fio spinning
        os.kill(pid, signal.SIGKILL)


def test_fio_outlives_its_killed_runner_and_heal_stops_all_of_it(crashed_runner):
    state, fio_pid, argv = crashed_runner
    # fio's main process dies of SIGPIPE at its next status report (1 s) into the dead runner's pipe;
    # its forked job goes on: the control that there is something to reap, and that the recorded pid
    # alone would not find it
    assert _until(lambda: not _running(fio_pid), 5), "fio's main process outlived the broken pipe"
    time.sleep(0.5)
    assert _fio_processes(argv), "control: fio's job must outlive a runner killed with SIGKILL"
    procs = WorkloadProcesses(state)
    [left] = procs.leftovers()
    assert left.pid == fio_pid and left.label == "fio:reaper-null"
    report = procs.reap()
    assert [r.pid for r in report.stopped] == [fio_pid] and report.ok
    assert _until(lambda: not _fio_processes(argv), 5)
    assert procs.records() == [] and "stopped 1 workload process(es)" in report.summary()


def test_drill_heal_stops_a_crashed_runs_fio(crashed_runner, tmp_path):
    state, fio_pid, argv = crashed_runner
    target = tmp_path / "t.toml"
    dump_target(make_target(str(state)), target)
    p = subprocess.run([sys.executable, "-m", "drills.cli", "heal", "--target", str(target)], capture_output=True,
                       text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert p.returncode == 0, p.stderr
    assert f"fio:reaper-null (pid {fio_pid})" in p.stdout
    assert _until(lambda: not _fio_processes(argv), 5)


def test_a_live_runners_workloads_are_left_alone(tmp_path):
    child, tag = _tagged(["sleep", "60"])
    try:
        procs = WorkloadProcesses(tmp_path)
        procs.register(child.pid, "fio:live", ["sleep", "60"], tag)  # owner: this test process, alive
        assert procs.leftovers() == []
        report = procs.reap()
        assert report.stopped == [] and child.poll() is None and len(procs.records()) == 1
        procs.forget(child.pid)
        assert procs.records() == []
    finally:
        child.kill()
        child.wait()


def _record(state: Path, pid: int, started: float, tag: str) -> None:
    """A record whose runner is gone (no pid 999999999 on this machine)."""
    d = state / "workloads"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{pid}.json").write_text(json.dumps({"pid": pid, "started": started, "label": "fio:x", "argv": ["fio"],
                                               "tag": tag, "owner_pid": 999_999_999, "owner_started": 1.0}))


def _tagged(cmd: list[str], **kw) -> tuple[subprocess.Popen, str]:
    tag = new_tag()
    return subprocess.Popen(cmd, env={**os.environ, TAG_ENV: tag}, start_new_session=True, **kw), tag


def test_a_reused_pid_is_never_killed(tmp_path):
    """The record names a pid now held by another process (without the record's tag, started later): the
    record goes, the process stays."""
    child, _other_tag = _tagged(["sleep", "60"])
    try:
        _record(tmp_path, child.pid, started=psutil.Process(child.pid).create_time() - 100.0, tag=new_tag())
        report = WorkloadProcesses(tmp_path).reap()
        assert report.stopped == [] and report.forgotten == 1
        time.sleep(0.2)
        assert child.poll() is None
        assert WorkloadProcesses(tmp_path).records() == []
    finally:
        child.kill()
        child.wait()


def test_a_process_deaf_to_sigint_is_killed_after_the_grace(tmp_path):
    child, tag = _tagged([sys.executable, "-c", "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                          "print(1, flush=True)\ntime.sleep(60)"], stdout=subprocess.PIPE)
    try:
        child.stdout.readline()  # SIGINT ignored from here on
        _record(tmp_path, child.pid, started=psutil.Process(child.pid).create_time(), tag=tag)
        t0 = time.monotonic()
        report = WorkloadProcesses(tmp_path).reap(grace_s=0.5)
        assert [r.pid for r in report.stopped] == [child.pid]
        assert child.wait(5) == -signal.SIGKILL and time.monotonic() - t0 >= 0.5
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_torn_record_is_dropped(tmp_path):
    d = tmp_path / "workloads"
    d.mkdir()
    (d / "123.json").write_text('{"pid": 12')
    assert WorkloadProcesses(tmp_path).records() == []
    assert not (d / "123.json").exists()


def test_fio_that_cannot_be_recorded_is_not_left_running(tmp_path):
    """A state directory that cannot take the record: fio is stopped at once and the error names the directory."""
    from drills.workloads.fio import FioError, FioJob, start_job

    blocked = tmp_path / "state"
    blocked.mkdir()
    (blocked / "workloads").write_text("a file where the records' directory should be")
    job = FioJob(name="reaper-unrecorded", rw="randwrite", bs="4k", iodepth=1, runtime=3600, size="16M",
                 ioengine="null")
    with pytest.raises(FioError, match="cannot record it in"):
        start_job(job, processes=WorkloadProcesses(blocked))
    time.sleep(0.3)
    assert not [p for p in psutil.process_iter(["cmdline", "status"])
                if p.info["status"] != psutil.STATUS_ZOMBIE and "reaper-unrecorded" in " ".join(p.info["cmdline"] or ())]
