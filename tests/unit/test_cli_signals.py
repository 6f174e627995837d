"""`drill` as a real subprocess: a closed stdout pipe and Ctrl-C end it without a Python traceback.

A closed pipe: the read end is closed before the command starts, so its first write hits EPIPE (what
`drill ... | head -1` does once head has its line). Ctrl-C: SIGINT sent to a `drill` process while it
waits; the commands that wait are stand-ins (patched in a small driver script) because every real
waiting command needs a cluster, but main(), the fault session and pytest are the real ones.
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

import pytest

from drills.faults.ledger import FaultLedger
from drills.target import dump_target

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emulators.fake import make_target  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
EXAMPLE = REPO / "examples" / "staging-target.toml"


def run_into_closed_pipe(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `python -m drills.cli ARGS` with stdout a pipe nobody reads any more."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "drills.cli", *args], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, timeout=60)
    finally:
        os.close(write_end)


@pytest.fixture
def sandbox_dir_with_logs(tmp_path: Path) -> Path:
    logs = tmp_path / "sb" / "log"
    logs.mkdir(parents=True)
    (logs / "osd.0.log").write_text("".join(f"line {i}\n" for i in range(5000)))
    return tmp_path / "sb"


@pytest.mark.parametrize("case", ["target", "dry-run", "help", "status-no-sandbox", "logs", "heal", "bad-target"])
def test_a_closed_pipe_ends_quietly_with_the_commands_own_status(tmp_path, sandbox_dir_with_logs, case):
    target = tmp_path / "t.toml"
    dump_target(make_target(str(tmp_path / "state")), target)
    args, rc = {
        "target": (["target", "--target", str(EXAMPLE), "--schema-only"], 0),
        "dry-run": (["run", "--dry-run", "--target", str(EXAMPLE), "--report-dir", str(tmp_path / "r")], 0),
        "help": (["--help"], 0),
        "status-no-sandbox": (["sandbox", "status", "--dir", str(tmp_path / "none")], 1),  # "no sandbox": its own 1
        "logs": (["sandbox", "logs", "--dir", str(sandbox_dir_with_logs), "-n", "5000"], 0),  # more than a pipe holds
        "heal": (["heal", "--target", str(target)], 0),
        "bad-target": (["target", "--target", str(tmp_path / "missing.toml")], 2),
    }[case]
    p = run_into_closed_pipe(args, cwd=tmp_path)
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr
    if case == "bad-target":  # the error still reaches stderr, which is open
        assert p.stderr.startswith("drill: error: target file") and p.stderr.count("\n") == 1
    else:
        assert p.stderr == ""
    assert p.returncode == rc


def test_the_same_command_into_an_open_pipe_prints_its_output(tmp_path):
    """The control: what the closed pipe lost is really output (so the test above could fail)."""
    p = subprocess.run([sys.executable, "-m", "drills.cli", "run", "--dry-run", "--target", str(EXAMPLE),
                        "--report-dir", str(tmp_path / "r")], capture_output=True, text=True, cwd=tmp_path, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.returncode == 0 and p.stdout.startswith("plan: suite 'smoke'") and p.stderr == ""


# --- Ctrl-C ----------------------------------------------------------------------------------

# A driver that replaces `drill heal`'s function with one that injects a fault through a real
# FaultSession (a backend that logs to a file) and then waits, and runs the real drills.cli.main.
FAULT_DRIVER = textwrap.dedent('''
    import json, sys, time
    sys.path.insert(0, {tests!r})
    from emulators.fake import FSID, FakeBackend, make_target
    from drills.faults.kinds import RackPowerCut
    from drills.faults.session import FaultSession
    from drills.faults.guard import FaultGuard, PoolSpec
    import drills.faults.cli as faults_cli

    class FileBackend(FakeBackend):
        def _do(self, op, host, *args):
            with open({log!r}, "a") as f:
                f.write(json.dumps([op, host.name]) + "\\n")

    def inject_and_wait(args):
        target = make_target({state!r})
        backend = FileBackend()
        with FaultSession(target, guard=FaultGuard(target, FSID, [PoolSpec("rbd", 3, 2, "rack")]), resolve=backend.resolve) as s:
            s.inject(RackPowerCut(target, "rack0"))
            print("injected", flush=True)
            time.sleep(60)
        return 0

    faults_cli.run = inject_and_wait
    from drills.cli import main
    sys.exit(main(["heal"]))
''')

# A driver whose `drill run` is pytest.main on one slow test, mapped to an exit status the way
# drills.runner.run_suite maps it: pytest swallows the KeyboardInterrupt into its own status 2.
PYTEST_DRIVER = textwrap.dedent('''
    import sys
    import pytest
    import drills.runner

    def run_suite(**kw):
        rc = int(pytest.main(["-p", "no:cacheprovider", "-q", {test_file!r}]))
        return {{0: 0, 1: 1}}.get(rc, 2)

    drills.runner.run_suite = run_suite
    from drills.cli import main
    sys.exit(main(["run", "--target", "unused.toml"]))
''')

SLOW_TEST = textwrap.dedent('''
    import time
    from pathlib import Path

    def test_waits():
        Path({marker!r}).write_text("started")
        time.sleep(60)
''')


def _start(script: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)})


def _wait_for(check, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("sig, rc, line", [(signal.SIGINT, 130, "drill: interrupted"),
                                           (signal.SIGTERM, 143, "drill: stopped by SIGTERM")],
                         ids=["ctrl-c", "sigterm"])
def test_a_signal_heals_the_armed_fault_then_exits_without_traceback(tmp_path, sig, rc, line):
    state, log = tmp_path / "state", tmp_path / "calls.log"
    p = _start(FAULT_DRIVER.format(tests=str(TESTS), log=str(log), state=str(state)), tmp_path)
    try:
        assert p.stdout is not None and p.stdout.readline() == "injected\n", p.stderr.read() if p.stderr else ""
        p.send_signal(sig)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == rc, err
    assert err == line + "\n"  # one line, no traceback
    calls = [tuple(json.loads(x)) for x in log.read_text().splitlines()]
    # Powered off at injection, powered on again by the session before main() saw the interrupt.
    assert [c for c in calls if c[0] == "power_off"] and sorted(calls[-2:]) == [("power_on", "r0h0"), ("power_on", "r0h1")]
    assert FaultLedger(state).pending() == []


def test_ctrl_c_under_pytest_still_exits_130(tmp_path):
    """pytest turns the KeyboardInterrupt into its exit status 2 (a set-up error for `drill run`); main()
    saw the SIGINT itself and exits 130."""
    marker = tmp_path / "started"
    test_file = tmp_path / "test_slow.py"
    test_file.write_text(SLOW_TEST.format(marker=str(marker)))
    p = _start(PYTEST_DRIVER.format(test_file=str(test_file)), tmp_path)
    try:
        _wait_for(marker.exists, "the slow test to start")
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 130, (out, err)
    assert "KeyboardInterrupt" in out  # pytest's own one-line note, on stdout
    assert "Traceback" not in err and err.endswith("drill: interrupted\n")


def test_pytest_output_into_a_closed_pipe_does_not_stop_the_run(tmp_path):
    """`drill run | head -3`: the run goes on to the end (its report and heals matter more than its
    output) and exits with the run's status."""
    marker = tmp_path / "ran-to-the-end"
    test_file = tmp_path / "test_fine.py"
    test_file.write_text(textwrap.dedent(f'''
        from pathlib import Path
        def test_one():
            print("x" * 100000)
        def test_two():
            Path({str(marker)!r}).write_text("yes")
    '''))
    driver = PYTEST_DRIVER.format(test_file=str(test_file))
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        p = subprocess.run([sys.executable, "-c", driver], stdout=write_end, stderr=subprocess.PIPE, text=True,
                           cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    finally:
        os.close(write_end)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    assert marker.read_text() == "yes"
