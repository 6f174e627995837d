"""Bad input, as a new user would give it: every case is refused with exit 2 and one line that names the
file, the key and what to do, and nothing is injected (no fault ledger entry, no network namespace, no
nft table, no run directory).

Target and thresholds files go through `drill run` (the command that would inject), called in-process
through drills.cli.main (the same code as the `drill` process, milliseconds a case); command-line misuse
runs `python -m drills.cli` as a subprocess, since argparse ends the process itself. Cases that need a
librados connection (an unreachable mon, a wrong fsid) are in tests/integration/test_bad_input_cluster.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from drills.cli import main
from drills.faults.ledger import LEDGER_FILE, FaultLedger
from drills.target import TargetError, check_credentials, credential_problems, load_target

REPO = Path(__file__).resolve().parents[2]
NETNS_PREFIX = "fcbad"  # the bad targets' hosts live in namespaces of this prefix: none may appear
UNSET_ENV = "DRILLS_TEST_BAD_INPUT_UNSET_BMC_PASSWORD"

GOOD_TARGET = """\
schema_version = 1
state_dir = "{state}"
destructive = true

[cluster]
name = "bad-input"
fsid = "5e1b1c0c-0000-4000-8000-00000000d811"
conf = "{tmp}/ceph.conf"
keyring = "{tmp}/keyring"
deployment = "sandbox"
op_timeout = 5.0

[[racks]]
name = "rack1"

[[racks.hosts]]
name = "r1h1"
address = "10.213.99.11"
daemons = ["osd.0"]
access = {{ kind = "local", netns = "fcbad-r1h1" }}
power = {{ kind = "sandbox" }}   # r1h1 power
network = {{ kind = "sandbox" }}

[[racks]]
name = "rack2"

[[racks.hosts]]
name = "r2h1"
address = "10.213.99.21"
daemons = ["osd.1"]
access = {{ kind = "local", netns = "fcbad-r2h1" }}
power = {{ kind = "sandbox" }}
network = {{ kind = "sandbox" }}

[[racks]]
name = "rack3"

[[racks.hosts]]
name = "r3h1"
address = "10.213.99.31"
daemons = ["osd.2"]
access = {{ kind = "local", netns = "fcbad-r3h1" }}
power = {{ kind = "sandbox" }}
network = {{ kind = "sandbox" }}
"""

CLUSTER_TABLE = re.compile(r"\[cluster\]\n(?:[^\[].*\n)*")


def _drop(line: str):
    return lambda s: s.replace(line, "", 1)


def _swap(old: str, new: str):
    return lambda s: s.replace(old, new, 1)


# (case id, change to the good file, text naming the key, text saying what to do)
TARGET_CASES = [
    # every required key missing in turn
    ("no-state_dir", _drop('state_dir = "{state}"\n'), "missing required key 'state_dir'", "add state_dir = "),
    ("no-cluster", lambda s: CLUSTER_TABLE.sub("", s), "missing required key 'cluster'", "add a [cluster] table"),
    ("no-cluster.name", _drop('name = "bad-input"\n'), "cluster: missing required key 'name'", "add name = "),
    ("no-cluster.fsid", _drop('fsid = "5e1b1c0c-0000-4000-8000-00000000d811"\n'), "cluster: missing required key 'fsid'",
     "add fsid = "),
    ("no-cluster.conf", _drop('conf = "{tmp}/ceph.conf"\n'), "cluster: missing required key 'conf'", "add conf = "),
    ("no-cluster.keyring", _drop('keyring = "{tmp}/keyring"\n'), "cluster: missing required key 'keyring'", "add keyring = "),
    ("no-rack-name", _drop('name = "rack2"\n'), "racks[1]: missing required key 'name'", "add name = "),
    ("no-host-name", _drop('name = "r3h1"\n'), "racks[2].hosts[0]: missing required key 'name'", "add name = "),
    # wrong types
    ("destructive-string", _swap("destructive = true", 'destructive = "yes"'), "destructive: expected true or false, got 'yes'",
     "write e.g. destructive = true"),
    ("op_timeout-string", _swap("op_timeout = 5.0", 'op_timeout = "soon"'), "cluster.op_timeout: expected a number, got 'soon'",
     "write e.g. op_timeout = 30.0"),
    ("port-string", _swap('access = {{ kind = "local", netns = "fcbad-r2h1" }}',
                          'access = {{ kind = "ssh", host = "x", port = "22" }}'),
     "racks[1].hosts[0].access.port: expected a whole number, got '22'", "write e.g. port = 22"),
    ("daemons-string", _swap('daemons = ["osd.0"]', 'daemons = "osd.0"'), "racks[0].hosts[0].daemons: expected a list, got 'osd.0'",
     'write daemons = ["...", "..."]'),
    ("daemons-numbers", _swap('daemons = ["osd.0"]', "daemons = [0]"), "racks[0].hosts[0].daemons: expected a list of strings",
     "quote each item"),
    ("racks-string", lambda s: 'racks = "rack1"\n' + s.split("[[racks]]")[0], "racks: expected a list, got 'rack1'",
     "write [[racks]] tables"),
    ("cluster-string", lambda s: 'cluster = "ceph"\n' + CLUSTER_TABLE.sub("", s), "cluster: expected a table, got str",
     "write it as [cluster]"),
    ("typo-key", _swap("destructive = true", "destructve = true"), "unknown key(s) destructve", "rename or remove it"),
    ("bad-kind", _swap('power = {{ kind = "sandbox" }}   # r1h1 power', 'power = {{ kind = "ilo" }}'),
     "host r1h1: power.kind 'ilo' is not one of none, sandbox, ipmi, redfish", "write one of those"),
    # duplicate OSD ids, hosts, racks
    ("duplicate-osd", _swap('daemons = ["osd.1"]', 'daemons = ["osd.0"]'), "daemon 'osd.0' is listed on two hosts (r1h1 and r2h1)",
     "remove it from the other's daemons"),
    ("duplicate-osd-id", _swap('daemons = ["osd.1"]', 'daemons = ["osd.00"]'), "OSD id 0 is listed twice ('osd.0' on r1h1, 'osd.00' on r2h1)",
     "remove or renumber one"),
    ("duplicate-host", _swap('name = "r2h1"', 'name = "r1h1"'), "host 'r1h1' appears twice", "rename or remove one"),
    ("duplicate-rack", _swap('name = "rack2"', 'name = "rack1"'), "rack 'rack1' appears twice", "merge the two or rename one"),
    ("osd-not-a-number", _swap('daemons = ["osd.1"]', 'daemons = ["osd.one"]'), "daemon 'osd.one': an OSD id is a number",
     "e.g. 'osd.3'"),
    # not a target file at all
    ("not-toml", lambda s: s + "\n[[racks]\n", "is not valid TOML", "fix the TOML syntax"),
    ("schema-version", lambda s: s.replace("schema_version = 1", "schema_version = 7"), "schema_version 7 is not supported",
     "write schema_version = 1"),
]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "ceph.conf").write_text("[global]\nmon_host = 127.0.0.1:1\n")
    (tmp_path / "keyring").write_text("[client.admin]\n\tkey = AQBzd0VmAAAAABAAe8c0lGs0OcMytA9DGz6gxA==\n")
    return {"tmp": tmp_path, "state": tmp_path / "state", "reports": tmp_path / "reports", "target": tmp_path / "target.toml"}


def _fill(text: str, files: dict[str, Path]) -> str:
    return text.replace("{state}", str(files["state"])).replace("{tmp}", str(files["tmp"])).replace("{{", "{").replace("}}", "}")


def write_target(files: dict[str, Path], change=lambda s: s) -> Path:
    files["target"].write_text(_fill(change(GOOD_TARGET), files))
    return files["target"]


def _netns() -> list[str]:
    p = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return [line.split()[0] for line in p.stdout.splitlines() if line.strip()]


def _root_nft_drill_tables() -> set[str]:
    p = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True)
    return {line for line in p.stdout.splitlines() if "drills_" in line}


@pytest.fixture
def nothing_injected(files: dict[str, Path]):
    """After the test: no ledger entry under the target's state_dir, no namespace of the bad target's hosts,
    no new drills_ nft table in this namespace, no run directory."""
    nft_before = _root_nft_drill_tables()
    yield
    ledger = files["state"] / LEDGER_FILE
    assert not ledger.exists() or FaultLedger(files["state"]).pending() == []
    assert not ledger.exists(), f"{ledger} was written"
    assert [n for n in _netns() if n.startswith(f"{NETNS_PREFIX}-")] == []
    assert _root_nft_drill_tables() == nft_before
    assert not files["reports"].exists() or not any(files["reports"].iterdir()), "a run directory was made"


def refused(capsys, argv: list[str]) -> str:
    """Run `drill ARGV` in-process; assert exit 2 and one line on stderr; return that line."""
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("drill: error: "), err
    return err.strip()


def test_the_good_target_is_good(files):
    """The control: the unchanged file loads, so each case below fails for its one change."""
    t = load_target(write_target(files))
    assert [r.name for r in t.racks] == ["rack1", "rack2", "rack3"] and t.osd_ids == [0, 1, 2]
    assert credential_problems(t) == []


@pytest.mark.parametrize("change, key, todo", [c[1:] for c in TARGET_CASES], ids=[c[0] for c in TARGET_CASES])
def test_bad_target_file_is_refused_before_anything_runs(files, capsys, nothing_injected, change, key, todo):
    path = write_target(files, change)
    line = refused(capsys, ["run", "--target", str(path), "--suite", "smoke", "--report-dir", str(files["reports"])])
    assert str(path) in line
    assert _fill(key, files) in line
    assert todo in line


def test_an_unset_bmc_password_variable_is_named_with_its_host_and_fix(files, capsys, nothing_injected, monkeypatch):
    monkeypatch.delenv(UNSET_ENV, raising=False)
    path = write_target(files, _swap('power = {{ kind = "sandbox" }}   # r1h1 power',
                                     f'power = {{{{ kind = "ipmi", address = "127.0.0.1", username = "u", password_env = "{UNSET_ENV}" }}}}'))
    t = load_target(path)  # the file itself is fine: reading it needs no credential (drill heal, reports)
    with pytest.raises(TargetError) as e:
        check_credentials(t)
    for part in (str(path), "host r1h1", f"power.password_env names {UNSET_ENV}", f"export {UNSET_ENV}"):
        assert part in str(e.value)
    capsys.readouterr()
    rc = main(["target", "--target", str(path)])
    out, err = capsys.readouterr()
    assert rc == 2 and err.strip() == f"drill: error: {e.value}"
    monkeypatch.setenv(UNSET_ENV, "secret")  # and with the variable set, the same file passes
    assert main(["target", "--target", str(path)]) == 0


@pytest.mark.parametrize("where, line, key", [
    ("password_file", 'password_file = "{tmp}/no-such-password"', "power.password_file {tmp}/no-such-password cannot be read"),
    ("none", "", "names no BMC password"),
])
def test_other_unusable_bmc_credentials(files, where, line, key):
    power = f'power = {{{{ kind = "redfish", address = "https://127.0.0.1:1", {line + ", " if line else ""}system_id = "1" }}}}'
    path = write_target(files, _swap('power = {{ kind = "sandbox" }}   # r1h1 power', power))
    problems = credential_problems(load_target(path))
    assert len(problems) == 1 and _fill(key, files) in problems[0] and str(path) in problems[0]


@pytest.mark.parametrize("argv, key, todo", [
    (["restart", "--rack", "rack9"], "unknown rack 'rack9'; the target has: rack1, rack2, rack3", "pass one of those"),
    (["restart", "--host", "r9h9"], "unknown host 'r9h9'; the target has: r1h1, r2h1, r3h1", "pass one of those"),
], ids=["rack", "host"])
def test_unknown_rack_or_host_names_list_the_known_ones(files, capsys, nothing_injected, argv, key, todo):
    path = write_target(files)
    rc = main([*argv, "--target", str(path), "--memory-budget", "1GiB", "--report-dir", str(files["reports"])])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert key in err and todo in err and str(path) in err


# --- thresholds files -------------------------------------------------------------------------

THRESHOLDS_CASES = [
    ("unknown-drill", "[rack_power_cutt.degraded]\niops_min = 10\n", "rack_power_cutt", "unknown drill"),
    ("unknown-key", "[rack_power_cut.degraded]\niops_minn = 10\n", "iops_minn", "unknown key"),
    ("unknown-phase", "[rack_power_cut.degradedd]\niops_min = 10\n", "degradedd", "unknown phase"),
    ("bad-unit", '[rack_power_cut.degraded]\np99_latency_max = "5 parsecs"\n', "p99_latency_max", "parsecs"),
    ("negative-count", "[rack_power_cut.degraded]\niops_min = -10\n", "iops_min", "-10"),
    ("negative-duration", '[rack_power_cut.degraded]\np99_latency_max = "-5s"\n', "p99_latency_max", "-5s"),
    ("not-toml", "[rack_power_cut.degraded\n", "not valid TOML", "fix the file"),
]


@pytest.mark.parametrize("text, key, problem", [c[1:] for c in THRESHOLDS_CASES], ids=[c[0] for c in THRESHOLDS_CASES])
def test_bad_thresholds_file_is_refused_before_anything_runs(files, capsys, nothing_injected, text, key, problem):
    thresholds = files["tmp"] / "limits.toml"
    thresholds.write_text(text)
    line = refused(capsys, ["run", "--target", str(write_target(files)), "--thresholds", str(thresholds),
                            "--report-dir", str(files["reports"])])
    assert str(thresholds) in line and key in line and problem in line


def test_a_missing_thresholds_file_says_what_to_pass(files, capsys, nothing_injected):
    missing = files["tmp"] / "nope.toml"
    line = refused(capsys, ["run", "--target", str(write_target(files)), "--thresholds", str(missing),
                            "--report-dir", str(files["reports"])])
    assert str(missing) in line and "--thresholds" in line


# --- command-line misuse (real processes) --------------------------------------------------------


def drill(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drills.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


MISUSE_CASES = [
    # (id, arguments, what the line must name, what it must say to do)
    ("unknown-flag", ["run", "--target", "{target}", "--bogus"], "unrecognized arguments: --bogus", "see drill run --help"),
    ("unknown-command", ["fire"], "invalid choice: 'fire'", "see drill --help"),
    ("no-command", [], "the following arguments are required: command", "see drill --help"),
    ("restart-no-where", ["restart", "--target", "{target}"], "one of the arguments --rack --host is required",
     "see drill restart --help"),
    ("report-no-dir", ["report"], "the following arguments are required: run_dir", "see drill report --help"),
    ("power-no-state", ["sandbox", "power", "r1h1"], "the following arguments are required: state", "see drill sandbox power --help"),
    ("lines-zero", ["sandbox", "logs", "-n", "0"], "argument -n/--lines: must be at least 1 (got 0)", "see drill sandbox logs --help"),
    ("bad-size", ["sandbox", "up", "--osd-size", "8 parsecs"], "argument --osd-size", "see drill sandbox up --help"),
    ("unknown-suite", ["run", "--target", "{target}", "--suite", "nightlyy", "--report-dir", "{reports}"],
     "unknown suite 'nightlyy'", "choose one of smoke, nightly, full"),
    ("missing-target", ["run", "--target", "{tmp}/nope.toml", "--report-dir", "{reports}"], "target file {tmp}/nope.toml does not exist",
     "pass --target FILE"),
    ("not-a-run-dir", ["report", "{tmp}"], "{tmp} is not a run directory", "pass reports/<run-id>"),
]


@pytest.mark.parametrize("args, names, todo", [c[1:] for c in MISUSE_CASES], ids=[c[0] for c in MISUSE_CASES])
def test_command_line_misuse_is_one_line_and_exit_2(files, nothing_injected, args, names, todo):
    write_target(files)
    fill = {"{target}": str(files["target"]), "{reports}": str(files["reports"]), "{tmp}": str(files["tmp"])}

    def sub(text: str) -> str:
        for k, v in fill.items():
            text = text.replace(k, v)
        return text

    p = drill([sub(a) for a in args], cwd=files["tmp"])
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert sub(names) in lines[0] and sub(todo) in lines[0]
