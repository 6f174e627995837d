"""`drill restart --plan` against the test sandbox: a plan for every host of the rack, and nothing changed."""

from __future__ import annotations

import json

import pytest

from drills.cli import main
from drills.faults.ledger import FaultLedger

pytestmark = pytest.mark.integration


def _state(cluster) -> tuple[int, list[str], set[int]]:
    dump = cluster.osd_dump()
    return dump["epoch"], sorted(dump.get("flags_set", [])), {o["osd"] for o in dump["osds"] if o["up"]}


def test_plan_of_a_rack_changes_nothing(sandbox_target, sandbox_cluster, tmp_path, capsys):
    before = _state(sandbox_cluster)
    rack_hosts = [h.name for h in sandbox_target.rack("rack1").hosts]
    argv = ["restart", "--plan", "--target", sandbox_target.path, "--rack", "rack1", "--report-dir", str(tmp_path)]

    rc = main(argv)
    out = capsys.readouterr()
    assert rc == 0, out.err
    for name in rack_hosts:  # one row per host in the hosts table, with a verdict
        assert any(line.lstrip("│ ").startswith(name) and ("fits" in line or "WOULD EXCEED" in line)
                   for line in out.out.splitlines()), f"no plan row for {name}"
    assert "assumed, not measured" in out.out  # no history in tmp_path: the default cost, labelled
    assert "safe order:" in out.out

    assert main([*argv, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["complete"] and [h["host"] for h in plan["hosts"]] == rack_hosts
    for h in plan["hosts"]:
        assert h["verdict"] in ("fits", "would exceed") and h["predicted_peak_bytes"] > 0 and h["steps"]
        assert all(o["pgs"] > 0 for o in h["osds"])

    assert _state(sandbox_cluster) == before  # no new OSD map epoch, no flag, every OSD still up
    assert not FaultLedger(sandbox_target.state_dir).pending()
    assert not (tmp_path / "history.sqlite").exists()  # the history is read, never created


def test_plan_of_an_unknown_rack_exits_2_with_one_line(sandbox_target, capsys):
    rc = main(["restart", "--plan", "--target", sandbox_target.path, "--rack", "rack9"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "unknown rack 'rack9'" in err[0]
