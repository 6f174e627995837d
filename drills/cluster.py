"""The cluster client: librados with op timeouts, JSON mon commands, and wait_for.

Everything the harness asks a cluster goes through here, so no call hangs forever
during a fault: librados' mon and osd op timeouts are always set.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from drills.target import Target

PG_ACTIVE_CLEAN = "active+clean"


class ClusterError(Exception):
    """A cluster that cannot be reached or refuses a command; the message says what to do."""


class WaitTimeout(ClusterError):
    """A condition was not met in time; names the condition and the last state seen."""


@dataclass(frozen=True)
class OsdInfo:
    id: int
    host: str
    rack: str
    up: bool
    in_: bool


@dataclass(frozen=True)
class Topology:
    """The CRUSH tree as the cluster reports it: rack -> host -> osd ids."""

    racks: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    osds: dict[int, OsdInfo] = field(default_factory=dict)

    @property
    def hosts(self) -> dict[str, list[int]]:
        return {h: ids for r in self.racks.values() for h, ids in r.items()}


@dataclass(frozen=True)
class PgSummary:
    total: int
    states: dict[str, int]  # "active+clean" -> 32, ...
    degraded_objects: int
    misplaced_objects: int
    unfound_objects: int
    total_objects: int  # object copies (pgmap degraded_total)
    read_bytes_sec: float
    write_bytes_sec: float
    read_op_per_sec: float
    write_op_per_sec: float
    recovering_bytes_per_sec: float

    @property
    def active_clean(self) -> int:
        return self.states.get(PG_ACTIVE_CLEAN, 0)

    @property
    def inactive(self) -> int:
        return sum(n for s, n in self.states.items() if "active" not in s.split("+"))

    @property
    def all_active(self) -> bool:
        return self.total > 0 and self.inactive == 0

    @property
    def all_clean(self) -> bool:
        return self.total > 0 and self.active_clean == self.total

    @property
    def degraded_ratio(self) -> float:
        return self.degraded_objects / self.total_objects if self.total_objects else 0.0


class CephCluster:
    """A connected librados handle for one target. Use as a context manager."""

    def __init__(self, target: Target, connect_timeout: float = 15.0):
        self.target = target
        self.connect_timeout = connect_timeout
        self._rados: Any = None

    # --- connection --------------------------------------------------------
    def connect(self) -> "CephCluster":
        import rados

        c = self.target.cluster
        for what, path in (("ceph.conf", c.conf), ("keyring", c.keyring)):
            if not Path(path).is_file():
                raise ClusterError(f"{what} {path} named by the target does not exist; fix cluster.{'conf' if what == 'ceph.conf' else 'keyring'} in {self.target.path or 'the target file'}")
        timeout = str(int(c.op_timeout))
        r = rados.Rados(
            conffile=c.conf,
            name=c.client,
            conf={
                "keyring": c.keyring,
                "rados_mon_op_timeout": timeout,
                "rados_osd_op_timeout": timeout,
                "client_mount_timeout": str(int(self.connect_timeout)),
                "rbd_cache": "false",  # measure (and restore into) the cluster, not client memory
                "log_to_stderr": "false",
                "err_to_stderr": "false",
            },
        )
        try:
            r.connect(timeout=int(self.connect_timeout))
        except rados.Error as e:
            r.shutdown()
            raise ClusterError(
                f"cannot connect to the cluster of target file {self.target.path} as {c.client}: no monitor in "
                f"mon_host of {c.conf} answered within {int(self.connect_timeout)} s ({type(e).__name__}: {e}); "
                "check mon_host, that the monitors are up and reachable and that the keyring is right "
                "(sandbox: drill sandbox status)"
            ) from None
        self._rados = r
        live = r.get_fsid()
        if c.fsid and live != c.fsid:
            self.close()
            raise ClusterError(
                f"the cluster's fsid is {live} but the target file expects {c.fsid}: wrong cluster or stale target file {self.target.path}"
            )
        return self

    def close(self) -> None:
        if self._rados is not None:
            self._rados.shutdown()
            self._rados = None

    def __enter__(self) -> "CephCluster":
        return self.connect() if self._rados is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def rados(self) -> Any:
        if self._rados is None:
            raise ClusterError("not connected")
        return self._rados

    def open_ioctx(self, pool: str) -> Any:
        import rados

        try:
            return self.rados.open_ioctx(pool)
        except rados.ObjectNotFound:
            raise ClusterError(f"pool {pool!r} does not exist on the cluster") from None

    @contextlib.contextmanager
    def scratch_image(self, pool: str, size: int, prefix: str) -> Iterator[str]:
        """A fresh RBD image named ``<prefix>-<random>`` for the block, removed afterwards."""
        import rbd

        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        with self.open_ioctx(pool) as io:
            rbd.RBD().create(io, name, size)
            try:
                yield name
            finally:
                rbd.RBD().remove(io, name)

    # --- commands ----------------------------------------------------------
    def mon_command(self, prefix: str, inbuf: bytes = b"", **args: Any) -> Any:
        """Run a mon command; returns parsed JSON (or the text when the command prints none)."""
        cmd = {"prefix": prefix, "format": "json", **args}
        ret, out, err = self.rados.mon_command(json.dumps(cmd), inbuf, timeout=int(self.target.cluster.op_timeout))
        if ret != 0:
            raise ClusterError(f"mon command {prefix!r} failed ({ret}): {err.strip() or 'no message'}")
        if not out:
            return err
        try:
            return json.loads(out)
        except json.JSONDecodeError:
            return out.decode(errors="replace")

    def osdmap_binary(self) -> bytes:
        """The current OSD map in its binary form (`ceph osd getmap`), for osdmaptool."""
        ret, out, err = self.rados.mon_command(json.dumps({"prefix": "osd getmap"}), b"",
                                               timeout=int(self.target.cluster.op_timeout))
        if ret != 0:
            raise ClusterError(f"mon command 'osd getmap' failed ({ret}): {err.strip() or 'no message'}")
        return out

    def mgr_command(self, prefix: str, **args: Any) -> Any:
        cmd = {"prefix": prefix, "format": "json", **args}
        ret, out, err = self.rados.mgr_command(json.dumps(cmd), b"", timeout=int(self.target.cluster.op_timeout))
        if ret != 0:
            raise ClusterError(f"mgr command {prefix!r} failed ({ret}): {err.strip() or 'no message'}")
        return json.loads(out) if out else err

    def osd_command(self, osd_id: int, prefix: str, **args: Any) -> Any:
        """`ceph tell osd.N ...` through librados."""
        cmd = {"prefix": prefix, "format": "json", **args}
        ret, out, err = self.rados.osd_command(osd_id, json.dumps(cmd), b"", timeout=int(self.target.cluster.op_timeout))
        if ret != 0:
            raise ClusterError(f"osd.{osd_id} command {prefix!r} failed ({ret}): {err.strip() or 'no message'}")
        try:
            return json.loads(out) if out else err
        except json.JSONDecodeError:
            return out.decode(errors="replace")

    def heap_release(self, osd_id: int) -> None:
        """`ceph tell osd.N heap release`: tcmalloc returns freed heap to the kernel. ClusterError when
        refused (Debian's build: "not using tcmalloc!"; glibc malloc has no such command)."""
        self.osd_command(osd_id, "heap", heapcmd="release")

    def release_heaps(self, osds: Sequence[str]) -> tuple[bool, str]:
        """`heap release` for each OSD ('osd.3', ...): (all released, why not: the refusals)."""
        refused = []
        for d in osds:
            try:
                self.heap_release(int(d.split(".", 1)[1]))
            except ClusterError as e:
                refused.append(f"{d}: {e}")
        return not refused, "; ".join(refused)

    # --- what the cluster says ---------------------------------------------
    def fsid(self) -> str:
        return self.rados.get_fsid()

    def status(self) -> dict[str, Any]:
        return self.mon_command("status")

    def health(self) -> dict[str, Any]:
        return self.mon_command("health", detail="detail")

    def health_status(self) -> str:
        return self.health()["status"]

    def versions(self) -> dict[str, Any]:
        return self.mon_command("versions")

    def osd_tree(self) -> dict[str, Any]:
        return self.mon_command("osd tree")

    def topology(self) -> Topology:
        tree = self.osd_tree()
        nodes = {n["id"]: n for n in tree["nodes"]}
        racks: dict[str, dict[str, list[int]]] = {}
        osds: dict[int, OsdInfo] = {}
        for n in tree["nodes"]:
            if n["type"] != "rack":
                continue
            racks[n["name"]] = {}
            for hid in n.get("children", []):
                h = nodes[hid]
                if h["type"] != "host":
                    continue
                ids = sorted(c for c in h.get("children", []) if c >= 0)
                racks[n["name"]][h["name"]] = ids
                for i in ids:
                    o = nodes[i]
                    osds[i] = OsdInfo(i, h["name"], n["name"], o.get("status") == "up", o.get("reweight", 0) > 0)
        return Topology(racks, osds)

    def osd_dump(self) -> dict[str, Any]:
        return self.mon_command("osd dump")

    def osds_up(self) -> set[int]:
        return {o["osd"] for o in self.osd_dump()["osds"] if o["up"]}

    def osds_in(self) -> set[int]:
        return {o["osd"] for o in self.osd_dump()["osds"] if o["in"]}

    def flags(self) -> set[str]:
        return set(self.osd_dump().get("flags_set", []))

    def set_flag(self, flag: str) -> None:
        self.mon_command("osd set", key=flag)

    def unset_flag(self, flag: str) -> None:
        self.mon_command("osd unset", key=flag)

    def pools(self) -> list[dict[str, Any]]:
        """Pools with size, min_size and crush rule."""
        return self.mon_command("osd pool ls", detail="detail")

    def pg_summary(self) -> PgSummary:
        pgmap = self.status()["pgmap"]
        states = {s["state_name"]: s["count"] for s in pgmap.get("pgs_by_state", [])}
        return PgSummary(
            total=pgmap.get("num_pgs", 0),
            states=states,
            degraded_objects=pgmap.get("degraded_objects", 0),
            misplaced_objects=pgmap.get("misplaced_objects", 0),
            unfound_objects=pgmap.get("unfound_objects", 0),
            total_objects=pgmap.get("degraded_total", pgmap.get("misplaced_total", 0)),
            read_bytes_sec=pgmap.get("read_bytes_sec", 0),
            write_bytes_sec=pgmap.get("write_bytes_sec", 0),
            read_op_per_sec=pgmap.get("read_op_per_sec", 0),
            write_op_per_sec=pgmap.get("write_op_per_sec", 0),
            recovering_bytes_per_sec=pgmap.get("recovering_bytes_per_sec", 0),
        )

    def config_get(self, who: str, key: str) -> str:
        """An option's value in the mon's config database (`ceph config get`): not what a daemon runs with
        when the option is set in its ceph.conf; for that, `osd_running_config`."""
        out = self.mon_command("config get", who=who, key=key)
        return str(out).strip() if not isinstance(out, dict) else json.dumps(out)

    def osd_running_config(self, osd_id: int, key: str) -> str:
        """The value an OSD runs with (`ceph tell osd.N config get KEY`): ceph.conf, the config db and
        runtime changes all counted."""
        out = self.osd_command(osd_id, "config get", var=key)
        if not isinstance(out, dict) or key not in out:
            raise ClusterError(f"osd.{osd_id} did not report {key}: {out!r}")
        return str(out[key])

    def config_set(self, who: str, key: str, value: str) -> None:
        """`ceph config set WHO KEY VALUE` in the mon's config database."""
        self.mon_command("config set", who=who, name=key, value=value)

    def config_rm(self, who: str, key: str) -> None:
        """`ceph config rm WHO KEY`: back to the default (or ceph.conf's value)."""
        self.mon_command("config rm", who=who, name=key)

    def crush_rules(self) -> list[dict[str, Any]]:
        """`ceph osd crush rule dump`: every rule with its steps (the failure domain is a chooseleaf type)."""
        out = self.mon_command("osd crush rule dump")
        if not isinstance(out, list):
            raise ClusterError(f"`osd crush rule dump` returned {type(out).__name__}, not a list of rules")
        return out

    def create_pool(self, pool: str, pg_num: int, application: str) -> None:
        """A replicated pool with the cluster's default size, tagged with its application."""
        self.mon_command("osd pool create", pool=pool, pg_num=pg_num, pgp_num=pg_num, pool_type="replicated")
        self.mon_command("osd pool application enable", pool=pool, app=application, yes_i_really_mean_it=True)

    def delete_pool(self, pool: str) -> None:
        """Delete a pool (refused by the mons unless mon_allow_pool_delete is true: ClusterError)."""
        self.mon_command("osd pool delete", pool=pool, pool2=pool, yes_i_really_really_mean_it=True)

    # --- waiting -----------------------------------------------------------
    def wait_for_health_ok(self, timeout: float = 180) -> None:
        def check() -> tuple[bool, str]:
            h = self.health()
            checks = ", ".join(f"{k}: {v['summary']['message']}" for k, v in h.get("checks", {}).items())
            return h["status"] == "HEALTH_OK", f"{h['status']} {checks}".strip()

        wait_for(check, timeout=timeout, what="HEALTH_OK", progress=self._recovery_progress)

    def wait_for_clean(self, timeout: float = 300) -> PgSummary:
        last: list[PgSummary] = []

        def check() -> tuple[bool, str]:
            s = self.pg_summary()
            last[:] = [s]
            return s.all_clean, _pg_state_text(s)

        wait_for(check, timeout=timeout, what="all PGs active+clean", progress=self._recovery_progress)
        return last[0]

    def wait_for_active(self, timeout: float = 120) -> None:
        def check() -> tuple[bool, str]:
            s = self.pg_summary()
            return s.all_active, _pg_state_text(s)

        wait_for(check, timeout=timeout, what="all PGs active", progress=self._recovery_progress)

    def wait_for_osds(self, up: set[int] | None = None, down: set[int] | None = None, timeout: float = 120) -> None:
        def check() -> tuple[bool, str]:
            live = self.osds_up()
            ok = (up is None or up <= live) and (down is None or not (down & live))
            return ok, f"up: {sorted(live)}"

        want = []
        if up:
            want.append(f"osd {sorted(up)} up")
        if down:
            want.append(f"osd {sorted(down)} down")
        wait_for(check, timeout=timeout, what=" and ".join(want) or "osds")

    def _recovery_progress(self) -> float:
        """Fewer degraded+misplaced objects or more clean PGs = progress."""
        s = self.pg_summary()
        return -(s.degraded_objects + s.misplaced_objects) * 1000 + s.active_clean


def _pg_state_text(s: PgSummary) -> str:
    states = ", ".join(f"{n} {k}" for k, n in sorted(s.states.items(), key=lambda kv: -kv[1]))
    return f"{s.total} pgs: {states}; degraded {s.degraded_objects}, misplaced {s.misplaced_objects}, unfound {s.unfound_objects}"


def wait_for(
    check: Callable[[], tuple[bool, str]],
    *,
    timeout: float,
    what: str,
    interval: float = 1.0,
    progress: Callable[[], float] | None = None,
    max_extension: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Poll `check` (returns (met, description of the state)) until met.

    While `progress()` keeps rising (e.g. recovery making headway), the deadline moves
    out by `timeout` from the last progress, up to `max_extension` (default 4 x timeout)
    past the original deadline: slow recovery is not a failure, a stall is.
    Errors raised by `check` count as an unmet poll (the cluster may be mid-fault);
    the last one is reported on timeout.
    """
    start = clock()
    deadline = start + timeout
    hard_deadline = start + timeout + (4 * timeout if max_extension is None else max_extension)
    best: float | None = None
    last_state = "never checked"
    while True:
        try:
            met, last_state = check()
        except Exception as e:  # noqa: BLE001 - a failed poll is a state, not a verdict
            met, last_state = False, f"check failed: {type(e).__name__}: {e}"
        if met:
            return last_state
        if progress is not None:
            try:
                p = progress()
                if best is not None and p > best:
                    deadline = min(hard_deadline, clock() + timeout)
                best = p if best is None else max(best, p)
            except Exception:  # noqa: BLE001
                pass
        now = clock()
        if now >= deadline:
            raise WaitTimeout(f"timed out after {now - start:.0f} s waiting for {what}; last state: {last_state}")
        sleep(min(interval, max(0.0, deadline - now)))
