"""End-of-drill evidence from the cluster itself: crash reports, cluster flags, unfound objects, and
inconsistent PGs after a deep scrub of exactly the PGs that hold the drill's own objects and images.

Every reader returns a value or a result whose `error` says why it could not be read; a reading that
could not be taken is never 0 or an empty set.

Deep scrub (never repair): `pgs_of_objects` / `pgs_of_image` map names to PG ids (`osd map`; an image's
data objects are `<block_name_prefix>.<index as 16 hex digits>`), `deep_scrub` asks the mgr for
`pg deep-scrub` of each, waits until each PG's `last_deep_scrub_stamp` moves past its value before the
request (the PG's own primary's clock on both sides, so no clock comparison with this machine), then
lists PGs whose state has `inconsistent` or whose stats count scrub errors, with `rados
list-inconsistent-obj` detail where the rados CLI is installed. Measured on Ceph 16.2.15: requested
scrubs run with `noscrub`/`nodeep-scrub` set; their pace is set by `osd_scrub_backoff_ratio` (0.66: an
OSD starts a scrub on one tick in three), not by `osd_max_scrubs`. Scrub after active+clean (recovery and
scrubs do not mix by default, `osd_scrub_during_recovery = false`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from drills.cluster import CephCluster, ClusterError

# Above this many objects per PG of the pool, every PG almost surely holds one of the image's objects
# ((1 - 1/pg_num)^(8 pg_num) < 0.04 %): the whole pool is scrubbed instead of mapping each name.
OBJECTS_PER_PG_FOR_WHOLE_POOL = 8


def crash_ids(cluster: CephCluster) -> set[str] | None:
    """Ids of the crash reports the mgr's crash module holds (`ceph crash ls`); None when it cannot be
    read. Diff a before/after pair for new crashes. Daemons' crash dumps reach the module only through
    `ceph-crash` (the crash-posting agent) on their hosts."""
    try:
        out = cluster.mgr_command("crash ls")
    except (ClusterError, ValueError):
        return None
    if not isinstance(out, list):
        return None
    try:
        return {str(c["crash_id"]) for c in out}
    except (KeyError, TypeError):
        return None


def crash_dir_ids(crash_dir: str | Path) -> set[str] | None:
    """Crash dumps a host's daemons wrote to ``crash_dir`` (one directory per crash, named by its id),
    posted or not; None when the directory cannot be read. The sandbox runs no `ceph-crash`, so its
    dumps never reach `crash ls`: union this with `crash_ids` for a sandbox target
    (``crash_dir = <sandbox dir>/crash``, see `sandbox_crash_dir`)."""
    p = Path(crash_dir)
    try:
        return {d.name for d in p.iterdir() if d.is_dir() and d.name != "posted"} | (
            {d.name for d in (p / "posted").iterdir() if d.is_dir()} if (p / "posted").is_dir() else set())
    except OSError:
        return None


def sandbox_crash_dir(conf: str | Path) -> Path | None:
    """The ``crash_dir`` a ceph.conf names in [global] (the sandbox writes one); None when it names none."""
    import configparser

    cp = configparser.ConfigParser(strict=False, interpolation=None)
    try:
        cp.read_string(Path(conf).read_text())
    except (OSError, configparser.Error):
        return None
    for section in ("global", "osd"):
        if cp.has_option(section, "crash_dir"):
            return Path(cp.get(section, "crash_dir").strip())
    return None


def crash_snapshot(cluster: CephCluster) -> set[str] | None:
    """What to diff before/after a drill: the mgr's crash ids, plus, on a sandbox target (which runs no
    `ceph-crash` to post dumps), the dumps in the sandbox's crash_dir. None when either cannot be read.
    Measured on the sandbox: SIGABRT to an OSD writes a dump to crash_dir that `crash ls` never shows."""
    ids = crash_ids(cluster)
    if ids is None:
        return None
    if cluster.target.cluster.deployment == "sandbox":
        d = sandbox_crash_dir(cluster.target.cluster.conf)
        local = crash_dir_ids(d) if d is not None else None
        if local is None:
            return None
        ids |= local
    return ids


def crash_details(cluster: CephCluster, ids: Iterable[str]) -> dict[str, str]:
    """crash id -> "entity_name: assert/backtrace head" (or why it could not be read), for a report; from the
    mgr, else (a sandbox dump nobody posted) from the dump's own meta file."""
    local = sandbox_crash_dir(cluster.target.cluster.conf) if cluster.target.cluster.deployment == "sandbox" else None
    out: dict[str, str] = {}
    for cid in sorted(ids):
        info: Any = None
        try:
            info = cluster.mgr_command("crash info", id=cid)
        except (ClusterError, ValueError) as e:
            why = f"crash info failed: {e}"
            for meta in ([local / cid / "meta", local / "posted" / cid / "meta"] if local is not None else []):
                try:
                    info = json.loads(meta.read_text())
                    break
                except (OSError, json.JSONDecodeError):
                    continue
            if info is None:
                out[cid] = f"({why})"
                continue
        if not isinstance(info, dict):
            out[cid] = "(crash info not understood)"
            continue
        what = info.get("assert_msg") or info.get("assert_condition") or next(iter(info.get("backtrace") or []), "")
        out[cid] = f"{info.get('entity_name', '?')}: {str(what).strip()[:200]}"
    return out


def flags_or_none(cluster: CephCluster) -> set[str] | None:
    """The osdmap's flags (noout, nodeep-scrub, ...) or None when they cannot be read."""
    try:
        return cluster.flags()
    except (ClusterError, KeyError, TypeError):
        return None


def unfound_objects(cluster: CephCluster) -> int | None:
    """The pgmap's unfound object count (absent there = 0, Ceph omits zeros); None when unreadable."""
    try:
        return cluster.pg_summary().unfound_objects
    except (ClusterError, KeyError, TypeError):
        return None


# --- PGs of objects and images ------------------------------------------------------------------


def pg_of_object(cluster: CephCluster, pool: str, name: str) -> str:
    """The PG id ("3.6") that holds a RADOS object (`ceph osd map POOL NAME`). Raises ClusterError."""
    out = cluster.mon_command("osd map", pool=pool, object=name)
    try:
        return str(out["pgid"])
    except (KeyError, TypeError):
        raise ClusterError(f"`osd map {pool} {name}` gave no pgid: {str(out)[:200]}") from None


def pgs_of_objects(cluster: CephCluster, pool: str, names: Iterable[str]) -> set[str]:
    return {pg_of_object(cluster, pool, n) for n in names}


def pool_pgs(cluster: CephCluster, pool: str) -> set[str]:
    return {p["pgid"] for p in _pg_stats(cluster, pool)}


def image_data_objects(cluster: CephCluster, pool: str, image: str) -> tuple[str, int, int]:
    """(block_name_prefix, object count, object size) of an RBD image, from librbd."""
    import rbd

    with cluster.open_ioctx(pool) as io:
        try:
            with rbd.Image(io, image, read_only=True) as img:
                st = img.stat()
        except rbd.ImageNotFound:
            raise ClusterError(f"RBD image {pool}/{image} does not exist") from None
    return st["block_name_prefix"], int(st["num_objs"]), int(st["obj_size"])


def image_object_name(block_name_prefix: str, index: int) -> str:
    """Pure: format-2 images name data object N "<prefix>.<N as 16 hex digits>"."""
    return f"{block_name_prefix}.{index:016x}"


def image_metadata_objects(image: str, block_name_prefix: str) -> list[str]:
    """Pure: a format-2 image's id, header and object-map objects (the header's omap holds its metadata)."""
    image_id = block_name_prefix.removeprefix("rbd_data.")
    return [f"rbd_id.{image}", f"rbd_header.{image_id}", f"rbd_object_map.{image_id}"]


def pgs_of_image(cluster: CephCluster, pool: str, image: str) -> set[str]:
    """Every PG that can hold one of the image's data objects (written or not: a superset) or its
    id/header/object-map objects."""
    prefix, count, _ = image_data_objects(cluster, pool, image)
    meta = pgs_of_objects(cluster, pool, image_metadata_objects(image, prefix))
    pg_num = next((int(p["pg_num"]) for p in cluster.pools() if p["pool_name"] == pool), 0)
    if pg_num and count > OBJECTS_PER_PG_FOR_WHOLE_POOL * pg_num:
        return pool_pgs(cluster, pool) | meta
    return pgs_of_objects(cluster, pool, (image_object_name(prefix, i) for i in range(count))) | meta


# --- deep scrub ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class InconsistentPg:
    pgid: str
    state: str
    scrub_errors: int | None  # stat_sum.num_scrub_errors
    detail: str  # objects and shards from `rados list-inconsistent-obj`, or why not read


@dataclass(frozen=True)
class ScrubResult:
    pgs_asked: tuple[str, ...]
    pgs_scrubbed: tuple[str, ...]  # whose last_deep_scrub_stamp moved past the request
    inconsistent: tuple[InconsistentPg, ...] = ()
    error: str | None = None  # set: not measured (some PG not scrubbed, or the cluster unreadable)
    seconds: float = 0.0

    @property
    def measured(self) -> bool:
        return self.error is None

    @property
    def ok(self) -> bool:
        """Measured and nothing inconsistent."""
        return self.error is None and not self.inconsistent

    def summary(self) -> str:
        head = f"deep scrub of {len(self.pgs_asked)} PG(s): {len(self.pgs_scrubbed)} scrubbed in {self.seconds:.1f} s"
        if self.inconsistent:
            head += "; INCONSISTENT: " + "; ".join(f"{p.pgid} ({p.state}, {p.scrub_errors} scrub errors) {p.detail}"
                                                  for p in self.inconsistent)
        else:
            head += "; none inconsistent"
        return head + (f"; not measured: {self.error}" if self.error else "")


def _pg_stats(cluster: CephCluster, pool: str | None = None) -> list[dict[str, Any]]:
    if pool is not None:
        out = cluster.mgr_command("pg ls-by-pool", poolstr=pool)
    else:
        out = cluster.mgr_command("pg ls")
    stats = out.get("pg_stats", []) if isinstance(out, dict) else out
    if not isinstance(stats, list):
        raise ClusterError(f"pg listing returned {type(out).__name__}, not PG stats")
    return stats


def _pg_states(cluster: CephCluster, pgids: set[str]) -> dict[str, dict[str, Any]]:
    """pgid -> its pg stats, for the pools the PGs belong to."""
    pool_ids = {p.split(".", 1)[0] for p in pgids}
    names = {str(p["pool_id"]): p["pool_name"] for p in cluster.pools()}
    out: dict[str, dict[str, Any]] = {}
    for pid in pool_ids:
        if pid not in names:
            raise ClusterError(f"pool id {pid} (of PG {sorted(p for p in pgids if p.startswith(pid + '.'))[0]}) does not exist")
        for p in _pg_stats(cluster, names[pid]):
            if p["pgid"] in pgids:
                out[p["pgid"]] = p
    return out


def is_inconsistent(pg: dict[str, Any]) -> bool:
    """Pure: a PG stats entry shows damage: state has inconsistent (or snaptrim_error) or scrub errors counted."""
    states = str(pg.get("state", "")).split("+")
    errors = (pg.get("stat_sum") or {}).get("num_scrub_errors", 0)
    return "inconsistent" in states or "snaptrim_error" in states or bool(errors)


def list_inconsistent_obj(target_conf: str, keyring: str, client: str, pgid: str, timeout: float = 30) -> str:
    """One line per inconsistent object of a PG (`rados list-inconsistent-obj`), or why it could not be read."""
    rados_cli = shutil.which("rados")
    if rados_cli is None:
        return "(rados CLI not installed: no per-object detail)"
    try:
        p = subprocess.run([rados_cli, "-c", target_conf, "-k", keyring, "-n", client, "list-inconsistent-obj", pgid,
                            "--format=json"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"(list-inconsistent-obj failed: {e})"
    if p.returncode != 0:
        return f"(list-inconsistent-obj failed: {p.stderr.strip()[:200]})"
    return describe_inconsistent(p.stdout)


def describe_inconsistent(text: str) -> str:
    """Pure: `rados list-inconsistent-obj --format=json` -> "obj NAME: errors [...] shards osd.N [...]; ..."."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return f"(list-inconsistent-obj output not JSON: {text[:120]!r})"
    parts = []
    for inc in data.get("inconsistents", []):
        name = inc.get("object", {}).get("name", "?")
        shards = ", ".join(f"osd.{s.get('osd')} {s.get('errors')}" for s in inc.get("shards", []) if s.get("errors"))
        parts.append(f"object {name}: {inc.get('errors', [])} {inc.get('union_shard_errors', [])}" + (f" [{shards}]" if shards else ""))
    return "; ".join(parts) if parts else "(no object detail: the scrub's record is gone or the PG was re-peered)"


def deep_scrub(
    cluster: CephCluster,
    pgids: Iterable[str],
    *,
    timeout: float | None = None,
    poll_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    stop: threading.Event | None = None,
) -> ScrubResult:
    """Deep-scrub exactly ``pgids`` (never repair), wait for each to finish, and list inconsistent ones.

    Waits until every PG's ``last_deep_scrub_stamp`` is later than before the request, up to ``timeout``
    (default 60 s + 3 s per PG: with Pacific's default osd_scrub_backoff_ratio 0.66 an OSD starts a scrub
    on one tick in three, about 1 PG/s on the sandbox; with 0, about 3 PGs/s) or until ``stop`` is set; a
    PG still unscrubbed then is named in ``error``. A PG found inconsistent is reported even when
    others timed out. Requests are re-sent every 20 s: an OSD drops a request it received mid-peering.
    """
    asked = tuple(sorted(set(pgids), key=_pg_sort_key))
    if timeout is None:
        timeout = 60.0 + 3.0 * len(asked)
    t0 = clock()
    if not asked:
        return ScrubResult((), (), error="no PGs to scrub (no objects or images named)")
    conf, keyring, client = cluster.target.cluster.conf, cluster.target.cluster.keyring, cluster.target.cluster.client
    try:
        before = {p: s.get("last_deep_scrub_stamp", "") for p, s in _pg_states(cluster, set(asked)).items()}
    except ClusterError as e:
        return ScrubResult(asked, (), error=f"cannot read the PGs' scrub stamps: {e}", seconds=clock() - t0)
    missing = [p for p in asked if p not in before]
    if missing:
        return ScrubResult(asked, (), error=f"PG(s) {', '.join(missing)} not in the PG map", seconds=clock() - t0)
    last_request = -1e9
    done: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    while True:
        pending = [p for p in asked if p not in done]
        if pending and clock() - last_request >= 20:
            for p in pending:
                try:
                    cluster.mgr_command("pg deep-scrub", pgid=p)
                except ClusterError as e:
                    errors.append(f"{p}: {e}")
            last_request = clock()
        try:
            now = _pg_states(cluster, set(pending))
        except ClusterError as e:
            now, errors = {}, errors + [f"PG stats unreadable: {e}"]
        for p, s in now.items():
            if s.get("last_deep_scrub_stamp", "") > before[p] and "scrubbing" not in str(s.get("state", "")):
                done[p] = s
        if len(done) == len(asked) or clock() - t0 >= timeout or (stop is not None and stop.is_set()):
            break
        if stop is not None:
            stop.wait(poll_s)
        else:
            sleep(poll_s)
    bad = tuple(InconsistentPg(p, s.get("state", ""), (s.get("stat_sum") or {}).get("num_scrub_errors"),
                               list_inconsistent_obj(conf, keyring, client, p))
                for p, s in sorted(done.items(), key=lambda kv: _pg_sort_key(kv[0])) if is_inconsistent(s))
    left = [p for p in asked if p not in done]
    error = None
    if left:
        error = (f"{len(left)} of {len(asked)} PG(s) not deep-scrubbed within {timeout:.0f} s ({', '.join(left[:8])}"
                 f"{' ...' if len(left) > 8 else ''}); check osd_max_scrubs, osd_scrub_during_recovery and that the PGs "
                 "are active+clean" + (f"; last errors: {'; '.join(errors[-3:])}" if errors else ""))
    return ScrubResult(asked, tuple(p for p in asked if p in done), bad, error, clock() - t0)


def _pg_sort_key(pgid: str) -> tuple[int, int]:
    pool, _, seed = pgid.partition(".")
    try:
        return int(pool), int(seed, 16)
    except ValueError:
        return 1 << 30, 0


def scrub_drill_pgs(cluster: CephCluster, objects: Iterable[tuple[str, Iterable[str]]] = (),
                    images: Iterable[tuple[str, str]] = (), timeout: float | None = None,
                    stop: threading.Event | None = None) -> ScrubResult:
    """Deep-scrub the PGs holding a drill's RADOS objects ((pool, names) pairs) and RBD images ((pool, image)
    pairs). A name or image that cannot be mapped makes the result not measured (nothing is scrubbed)."""
    pgs: set[str] = set()
    try:
        for pool, names in objects:
            pgs |= pgs_of_objects(cluster, pool, names)
        for pool, image in images:
            pgs |= pgs_of_image(cluster, pool, image)
    except ClusterError as e:
        return ScrubResult((), (), error=f"cannot map the drill's objects to PGs: {e}")
    return deep_scrub(cluster, pgs, timeout=timeout, stop=stop)


__all__ = ["crash_ids", "crash_snapshot", "crash_dir_ids", "sandbox_crash_dir", "crash_details", "flags_or_none", "unfound_objects", "pg_of_object", "pgs_of_objects",
           "pgs_of_image", "image_object_name", "deep_scrub", "scrub_drill_pgs", "ScrubResult",
           "InconsistentPg", "is_inconsistent", "describe_inconsistent"]
