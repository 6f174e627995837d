"""A short chaos soak on the test sandbox, through `drill soak` as a person runs it (docs/soak.md).

 - a 3-minute schedule (CI's soak): the run's recorded schedule is the one the same seed's --dry-run printed,
   every drawn fault was injected and healed (timeline and ledger), each step settled, the block and object
   clients ran throughout and every acknowledged write (RADOS and S3 PUTs) read back, the report shows the seed
   and every step's figures;
 - (a soak killed with -9 mid-fault leaves the fault in the ledger for `drill heal`, like any run of the fault
   session: tests/integration/test_restart_sandbox.py kills `drill restart` with -9 and heals; a soak-specific
   copy cost CI 2-3 minutes it does not have.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from drills.faults.ledger import FaultLedger
from drills.target import load_target
from drills.timeline import read_events

from canaries import outputs_agree

pytestmark = pytest.mark.integration

SEED = os.environ.get("DRILLS_TEST_SOAK_SEED", "20261130")
# CI's soak: 3 minutes of faults (warm-up, baseline, the last settle and the read-back come on top)
SOAK = ["--duration", "3min", "--seed", SEED, "--hold", "15s..30s", "--quiet", "10s..15s", "--settle", "5min"]


# A 10 s warm-up, as the fault quartet in test_verdict_sandbox.py: the earlier tests have warmed the cluster.
SHORT_WARMUP = {"DRILL_PACE_OVERRIDES": "warmup=10,warmup_max=10"}


def drill(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drills.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **SHORT_WARMUP})


@pytest.mark.timeout(2400)  # 3 minutes of faults, plus warm-up, settles and the read-back on a busy machine
def test_a_three_minute_soak_replays_its_seed_heals_every_fault_and_reports_each_step(sandbox_spec, sandbox,
                                                                                      sandbox_cluster, tmp_path):
    sandbox_cluster.wait_for_clean(timeout=300)
    target = str(sandbox_spec.target_path)
    dry = drill("soak", "--target", target, *SOAK, "--dry-run", "--json", timeout=120)
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert planned["steps"] and planned["seed"] == int(SEED)

    reports = tmp_path / "reports"
    t0 = time.monotonic()
    p = drill("soak", "--target", target, *SOAK, "--report-dir", str(reports))
    wall = time.monotonic() - t0
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    run = (reports / "latest").resolve()

    # the same seed drew the same schedule in the run as in the dry run; the report says timing differs
    recorded = json.loads((run / "soak-schedule.json").read_text())
    assert recorded["fingerprint"] == planned["fingerprint"] and recorded["steps"] == planned["steps"]
    soak = json.loads((run / "soak.json").read_text())
    assert "timing differs" in soak["timing_note"] and soak["wall_s"] < wall

    # every drawn fault injected and healed, in order, one step at a time, and nothing left armed
    events = read_events(run)
    faults = [e for e in events if e.kind in ("fault.inject", "fault.heal")]
    drawn = [f for step in planned["steps"] for f in step["faults"]]
    assert [e.kind for e in faults] == ["fault.inject", "fault.heal"] * len(drawn)
    assert all(e.data["ok"] for e in faults)
    assert FaultLedger(load_target(target).state_dir).pending() == []

    # each step: injected, held as drawn, healed, settled, with its figures
    assert len(soak["figures"]) == len(planned["steps"])
    for step, fig in zip(planned["steps"], soak["figures"]):
        assert fig["t_inject"] is not None and not fig["note"], fig
        assert fig["held_s"] >= step["hold_s"] and fig["settle_s"] is not None
        assert fig["iops_before"] and fig["iops_before"] > 0 and fig["iops_during"] is not None
        assert fig["p99_before_s"] is not None  # (during: None when no write completed while the fault held)
        assert fig["s3_put_rps_before"] is not None and fig["s3_errors"] is not None

    # the verdict (every output agrees), the read-back of both verifiers, and the report
    outputs_agree(run, "passed", 0)
    lost = json.loads((run / "drills" / "soak.json").read_text())["lost_writes"]
    assert lost["lost"] == 0 and lost["verified"] == lost["acknowledged"] > 0 and "S3ObjectBackend" in lost["method"]
    acks = [json.loads(line) for line in (run / "soak-s3-verifier.jsonl").read_text().splitlines()]
    assert sum(1 for a in acks if a["type"] == "ack") > 100  # 5 PUTs/s for minutes
    html = (run / "index.html").read_text()
    assert f"Soak: seed {SEED}" in html and planned["fingerprint"] in html
    assert "No acknowledged write was lost" in html
