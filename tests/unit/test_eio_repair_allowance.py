"""After eio_read, the OSD's repaired-read count is reset (a restart) before it could raise OSD_TOO_MANY_REPAIRS
in a later run: the harness must not turn its own side effect into a red nightly."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emulators.fake import make_target  # noqa: E402

from drills.catalogue import EIO_OBJECTS, keep_repair_allowance  # noqa: E402
from drills.cluster import ClusterError  # noqa: E402


class Cluster:
    def __init__(self, repaired: int | None, warn: str = "10", fail: bool = False) -> None:
        self.repaired, self.warn, self.fail, self.calls = repaired, warn, fail, []

    def mgr_command(self, prefix: str, **kw: Any) -> Any:
        if self.fail:
            raise ClusterError("mgr unavailable")
        return {"osd_stats": [{"osd": 1, "num_shards_repaired": self.repaired}, {"osd": 2, "num_shards_repaired": 0}]}

    def config_get(self, who: str, key: str) -> str:
        return self.warn

    def wait_for_osds(self, up: set, timeout: float) -> None:
        self.calls.append(("up", tuple(up)))

    def wait_for_clean(self, timeout: float) -> None:
        self.calls.append(("clean",))


class Faults:
    def __init__(self) -> None:
        self.calls: list = []

    def inject(self, fault: Any) -> Any:
        self.calls.append(("inject", fault.kind, fault.daemon))
        return fault

    def heal(self, fault: Any) -> None:
        self.calls.append(("heal", fault.kind))


class Drill:
    def __init__(self) -> None:
        self.events: list = []

    def event(self, kind: str, label: str, **data: Any) -> None:
        self.events.append(label)


def test_room_for_two_more_runs_leaves_the_osd_alone(tmp_path: Path) -> None:
    t, c, f, d = make_target(str(tmp_path)), Cluster(10 - 2 * EIO_OBJECTS), Faults(), Drill()
    assert keep_repair_allowance(d, c, t, f, "osd.1") is False
    assert f.calls == [] and c.calls == []


def test_no_room_restarts_the_osd_through_the_ledger_and_says_so(tmp_path: Path) -> None:
    t, c, f, d = make_target(str(tmp_path)), Cluster(10 - 2 * EIO_OBJECTS + 1), Faults(), Drill()
    assert keep_repair_allowance(d, c, t, f, "osd.1") is True
    assert f.calls == [("inject", "daemon_stop", "osd.1"), ("heal", "daemon_stop")]
    assert c.calls == [("up", (1,)), ("clean",)] and "OSD_TOO_MANY_REPAIRS" in d.events[0]


def test_an_unreadable_count_is_said_and_nothing_is_restarted(tmp_path: Path) -> None:
    t, c, f, d = make_target(str(tmp_path)), Cluster(9, fail=True), Faults(), Drill()
    assert keep_repair_allowance(d, c, t, f, "osd.1") is False
    assert f.calls == [] and "could not be read" in d.events[0]
