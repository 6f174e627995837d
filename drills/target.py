"""The target model: one TOML file describes a cluster to drill.

The sandbox writes one; a staging cluster is described by hand in the same schema
(see examples/staging-target.toml).  Everything in the harness reads a `Target`.

Credentials never live in the target file: it names environment variables or
files that hold them (``password_env``, ``password_file``, ``identity_file``,
``credentials_file``).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

SCHEMA_VERSION = 1

ACCESS_KINDS = ("local", "ssh")
POWER_KINDS = ("none", "sandbox", "ipmi", "redfish")
NETWORK_KINDS = ("none", "sandbox", "nft")
DEPLOYMENTS = ("sandbox", "package", "cephadm")


class TargetError(Exception):
    """A target file that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Access:
    """How the harness reaches a host to run commands on it."""

    kind: str = "local"  # local | ssh
    netns: str = ""  # local: network namespace the host's daemons live in (sandbox)
    host: str = ""  # ssh: address or name
    port: int = 22
    user: str = "root"
    identity_file: str = ""  # ssh: private key file (never the key itself)
    sudo: bool = False


@dataclass(frozen=True)
class Power:
    """How the harness cuts and restores a host's power."""

    kind: str = "none"  # none | sandbox | ipmi | redfish
    address: str = ""  # ipmi: BMC host; redfish: base URL
    port: int = 0
    username: str = ""
    password_env: str = ""  # name of an environment variable holding the password
    password_file: str = ""  # or a file holding it
    system_id: str = ""  # redfish: ComputerSystem id


@dataclass(frozen=True)
class Network:
    """How the harness blackholes or degrades a host's network."""

    kind: str = "none"  # none | sandbox | nft
    interfaces: tuple[str, ...] = ()  # nft on a real host: the cluster-facing links


@dataclass(frozen=True)
class Host:
    name: str  # CRUSH host name
    address: str = ""  # the host's address on the cluster network
    daemons: tuple[str, ...] = ()  # "osd.3", "mon.a", "mgr.x", "client.rgw.sandbox"
    access: Access = field(default_factory=Access)
    power: Power = field(default_factory=Power)
    network: Network = field(default_factory=Network)
    memory_budget: int = 0  # bytes available to Ceph daemons on this host (0 = not set)

    @property
    def osd_ids(self) -> list[int]:
        return [int(d.split(".", 1)[1]) for d in self.daemons if d.startswith("osd.")]


@dataclass(frozen=True)
class Rack:
    name: str  # CRUSH rack name
    hosts: tuple[Host, ...] = ()


@dataclass(frozen=True)
class S3:
    endpoint: str = ""  # e.g. http://10.213.0.2:7480
    credentials_file: str = ""  # JSON {"access_key": ..., "secret_key": ...}


@dataclass(frozen=True)
class Cluster:
    name: str
    fsid: str
    conf: str  # path to ceph.conf
    keyring: str  # path to the client's keyring
    client: str = "client.admin"
    deployment: str = "sandbox"  # sandbox | package | cephadm: how daemons are run
    rbd_pool: str = "rbd"
    rados_pool: str = "drills"
    op_timeout: float = 30.0  # librados mon/osd op timeout, seconds: no call hangs forever


@dataclass(frozen=True)
class Target:
    cluster: Cluster
    state_dir: str  # where the fault ledger and run state live
    destructive: bool = False  # faults are refused unless this is true
    racks: tuple[Rack, ...] = ()
    service_hosts: tuple[Host, ...] = ()  # hosts outside any rack (e.g. the sandbox's mon/mgr/rgw host)
    load_hosts: tuple[Host, ...] = ()  # fio --server / locust workers for staging
    s3: S3 = field(default_factory=S3)
    path: str = ""  # the file this target was read from (not written back)

    # --- topology look-ups -------------------------------------------------
    @property
    def hosts(self) -> list[Host]:
        return [h for r in self.racks for h in r.hosts] + list(self.service_hosts)

    def rack(self, name: str) -> Rack:
        for r in self.racks:
            if r.name == name:
                return r
        raise TargetError(f"unknown rack {name!r}; the target has: {', '.join(r.name for r in self.racks) or 'none'} "
                          f"(target file {self.path or 'in memory'}); pass one of those, or add the rack to the file")

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise TargetError(f"unknown host {name!r}; the target has: {', '.join(h.name for h in self.hosts) or 'none'} "
                          f"(target file {self.path or 'in memory'}); pass one of those, or add the host to the file")

    def rack_of(self, host_name: str) -> Rack | None:
        for r in self.racks:
            if any(h.name == host_name for h in r.hosts):
                return r
        return None

    def host_of_daemon(self, daemon: str) -> Host:
        for h in self.hosts:
            if daemon in h.daemons:
                return h
        raise TargetError(f"unknown daemon {daemon!r}: no host in target file {self.path or '(in memory)'} lists it in its daemons; "
                          "pass a daemon the target lists, or add it to its host's daemons")

    @property
    def osd_ids(self) -> list[int]:
        return sorted(i for h in self.hosts for i in h.osd_ids)


# --- reading -----------------------------------------------------------------


# What to write for a required key that is missing (the key's table, an example value, what it is for).
_REQUIRED_HINTS: dict[tuple[str, str], str] = {
    ("Target", "cluster"): "a [cluster] table with name, fsid, conf and keyring",
    ("Target", "state_dir"): 'state_dir = "/var/lib/ceph-drills/<cluster>" (where the fault ledger lives)',
    ("Cluster", "name"): 'name = "staging" (the name reports use)',
    ("Cluster", "fsid"): "fsid = \"<the output of `ceph fsid`>\" (drills refuse a cluster whose fsid differs)",
    ("Cluster", "conf"): 'conf = "/etc/ceph/ceph.conf"',
    ("Cluster", "keyring"): 'keyring = "/etc/ceph/ceph.client.admin.keyring"',
    ("Host", "name"): 'name = "<the host\'s CRUSH name, as in `ceph osd tree`>"',
    ("Rack", "name"): 'name = "<the rack\'s CRUSH name, as in `ceph osd tree`>"',
}

# How each scalar type reads to a person, and an example of it in TOML.
_KINDS = {"str": ("a string", '"..."'), "int": ("a whole number", "22"), "float": ("a number", "30.0"),
          "bool": ("true or false", "true")}


def _key(where: str) -> str:
    """'target.cluster.fsid' -> 'cluster.fsid': the key as the file spells it (the top level has no prefix)."""
    return where.removeprefix("target").lstrip(".") or "the top level"


def _build(cls: type, data: Any, where: str) -> Any:
    """Build a dataclass from a TOML table, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise TargetError(f"{_key(where)}: expected a table, got {type(data).__name__} {data!r}; "
                          f"write it as [{_key(where)}] or {{ key = value, ... }}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields) - {"path"})
    if unknown:
        raise TargetError(f"{_key(where)}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(f for f in fields if f != 'path'))} "
                          "(rename or remove it)")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
                hint = _REQUIRED_HINTS.get((cls.__name__, name), f"{name} = ...")
                table = f" to [{_key(where)}]" if where != "target" else ""
                raise TargetError(f"{_key(where)}: missing required key {name!r}; add {hint}{table}")
            continue
        kwargs[name] = _convert(f.type, data[name], f"{where}.{name}")
    return cls(**kwargs)


_NESTED = {"Access": Access, "Power": Power, "Network": Network, "Host": Host, "Rack": Rack, "S3": S3, "Cluster": Cluster}


def _convert(ftype: Any, value: Any, where: str) -> Any:
    t = ftype if isinstance(ftype, str) else getattr(ftype, "__name__", str(ftype))
    leaf = where.rsplit(".", 1)[-1]
    if t in _NESTED:
        return _build(_NESTED[t], value, where)
    if t.startswith("tuple["):
        inner = t[len("tuple[") : -len(", ...]")]
        if not isinstance(value, list):
            example = f"[[{_key(where)}]] tables" if inner in _NESTED else f'{leaf} = ["...", "..."]'
            raise TargetError(f"{_key(where)}: expected a list, got {value!r}; write {example}")
        if inner in _NESTED:
            return tuple(_build(_NESTED[inner], v, f"{where}[{i}]") for i, v in enumerate(value))
        if not all(isinstance(v, str) for v in value):
            raise TargetError(f"{_key(where)}: expected a list of strings, got {value!r}; quote each item, e.g. {leaf} = [\"osd.0\", \"osd.1\"]")
        return tuple(value)
    expected = {"str": str, "int": int, "float": (int, float), "bool": bool}[t]
    if (t != "bool" and isinstance(value, bool)) or not isinstance(value, expected):
        kind, example = _KINDS[t]
        raise TargetError(f"{_key(where)}: expected {kind}, got {value!r}; write e.g. {leaf} = {example}")
    return float(value) if t == "float" else value


def _validate(t: Target) -> None:
    if t.cluster.deployment not in DEPLOYMENTS:
        raise TargetError(f"cluster.deployment: {t.cluster.deployment!r} is not one of {', '.join(DEPLOYMENTS)}; write one of those")
    seen_hosts: set[str] = set()
    daemon_host: dict[str, str] = {}
    osd_host: dict[int, tuple[str, str]] = {}  # id -> (host, name as written): "osd.01" is osd.1 too
    for h in t.hosts + list(t.load_hosts):
        if h.name in seen_hosts:
            raise TargetError(f"host {h.name!r} appears twice; a host name is its CRUSH name and unique: rename or remove one")
        seen_hosts.add(h.name)
        if h.access.kind not in ACCESS_KINDS:
            raise TargetError(f"host {h.name}: access.kind {h.access.kind!r} is not one of {', '.join(ACCESS_KINDS)}; write one of those")
        if h.access.kind == "ssh" and not h.access.host:
            raise TargetError(f"host {h.name}: access.kind = 'ssh' needs access.host; add host = \"<address or name>\" to its access")
        if h.power.kind not in POWER_KINDS:
            raise TargetError(f"host {h.name}: power.kind {h.power.kind!r} is not one of {', '.join(POWER_KINDS)}; write one of those")
        if h.power.kind in ("ipmi", "redfish") and not h.power.address:
            raise TargetError(f"host {h.name}: power.kind = {h.power.kind!r} needs power.address; add the BMC's "
                              f"{'host name' if h.power.kind == 'ipmi' else 'base URL'} as address = \"...\"")
        if h.network.kind not in NETWORK_KINDS:
            raise TargetError(f"host {h.name}: network.kind {h.network.kind!r} is not one of {', '.join(NETWORK_KINDS)}; write one of those")
        for d in h.daemons:
            kind = d.split(".", 1)[0]
            if kind not in ("osd", "mon", "mgr", "client", "mds") or "." not in d:
                raise TargetError(f"host {h.name}: daemon {d!r} is not a Ceph daemon name like 'osd.3' or 'mon.a'; fix its daemons list")
            if kind == "osd" and not d.split(".", 1)[1].isdigit():
                raise TargetError(f"host {h.name}: daemon {d!r}: an OSD id is a number; write it as in `ceph osd tree`, e.g. 'osd.3'")
            if d in daemon_host:
                raise TargetError(f"daemon {d!r} is listed on two hosts ({daemon_host[d]} and {h.name}); "
                                  "a daemon runs on one host: remove it from the other's daemons")
            daemon_host[d] = h.name
            if kind == "osd":
                osd_id = int(d.split(".", 1)[1])
                if osd_id in osd_host:
                    other_host, other_name = osd_host[osd_id]
                    raise TargetError(f"OSD id {osd_id} is listed twice ({other_name!r} on {other_host}, {d!r} on {h.name}); "
                                      "each OSD id is one daemon: remove or renumber one")
                osd_host[osd_id] = (h.name, d)
    rack_names = [r.name for r in t.racks]
    for name in rack_names:
        if rack_names.count(name) > 1:
            raise TargetError(f"rack {name!r} appears twice; a rack name is its CRUSH name and unique: merge the two or rename one")


def load_target(path: str | Path) -> Target:
    """Read and validate a target file; raises TargetError with a one-line reason."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise TargetError(f"target file {p} does not exist; start the sandbox (drill sandbox up) or pass --target FILE") from None
    except tomllib.TOMLDecodeError as e:
        raise TargetError(f"target file {p} is not valid TOML: {e}; fix the TOML syntax there") from None
    version = raw.pop("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise TargetError(f"target file {p}: schema_version {version} is not supported (this harness reads {SCHEMA_VERSION}); "
                          f"write schema_version = {SCHEMA_VERSION} with the keys of examples/staging-target.toml")
    try:
        t = _build(Target, raw, "target")
    except TargetError as e:
        raise TargetError(f"target file {p}: {e}") from None
    t = dataclasses.replace(t, path=str(p.resolve()))
    try:
        _validate(t)
    except TargetError as e:
        raise TargetError(f"target file {p}: {e}") from None
    return t


# --- writing -----------------------------------------------------------------


def _strip_defaults(obj: Any) -> Any:
    """Dataclass -> dict, leaving out fields at their default so files stay short."""
    if dataclasses.is_dataclass(obj):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            if f.name == "path":
                continue
            v = getattr(obj, f.name)
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING  # type: ignore[misc]
            )
            if default is not dataclasses.MISSING and v == default:
                continue
            out[f.name] = _strip_defaults(v)
        return out
    if isinstance(obj, tuple):
        return [_strip_defaults(v) for v in obj]
    return obj


def dump_target(t: Target, path: str | Path, header: str = "") -> None:
    p = Path(path)
    data = {"schema_version": SCHEMA_VERSION, **_strip_defaults(t)}
    text = tomli_w.dumps(data)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text((header + "\n" if header else "") + text)
    tmp.replace(p)


def read_secret(env: str, file: str, what: str) -> str:
    """A credential from an environment variable or a file named in the target."""
    import os

    if env:
        v = os.environ.get(env)
        if v is None:
            raise TargetError(f"{what}: environment variable {env} is not set; export {env} before running the drill, "
                              "or name a file holding it with password_file")
        return v
    if file:
        try:
            return Path(file).read_text().strip()
        except OSError as e:
            raise TargetError(f"{what}: cannot read {file}: {e.strerror}; fix password_file or the file's permissions") from None
    raise TargetError(f"{what}: no password_env or password_file in the target; add one of them to the host's power table")


def credential_problems(t: Target) -> list[str]:
    """Every credential the target names that cannot be read on this machine, one line each, naming the
    file, the host, the key and what to do. Nothing is connected to: environment variables and files only.

    Checked apart from `load_target` because a target is also read where no credential is needed
    (`drill heal` of a sandbox fault, tests); `drill target` and the run's checks call it.
    """
    import os

    where = f"target file {t.path or '(in memory)'}"

    def unreadable(path: str) -> str:
        try:
            with open(path, "rb"):
                return ""
        except OSError as e:
            return e.strerror or type(e).__name__

    problems: list[str] = []
    for h in t.hosts + list(t.load_hosts):
        pw = h.power
        if pw.kind in ("ipmi", "redfish"):
            if pw.password_env and os.environ.get(pw.password_env) is None:
                problems.append(f"{where}: host {h.name}: power.password_env names {pw.password_env}, which is not set here; "
                                f"export {pw.password_env} before running, or use power.password_file")
            elif not pw.password_env and pw.password_file and (why := unreadable(pw.password_file)):
                problems.append(f"{where}: host {h.name}: power.password_file {pw.password_file} cannot be read ({why}); "
                                "fix the path or the file's permissions")
            elif not pw.password_env and not pw.password_file:
                problems.append(f"{where}: host {h.name}: power.kind = {pw.kind!r} names no BMC password; "
                                "add power.password_env (an environment variable) or power.password_file")
        if h.access.kind == "ssh" and h.access.identity_file and (why := unreadable(h.access.identity_file)):
            problems.append(f"{where}: host {h.name}: access.identity_file {h.access.identity_file} cannot be read ({why}); "
                            "fix the path or leave it out to use ssh's default keys")
    if t.s3.credentials_file and (why := unreadable(t.s3.credentials_file)):
        problems.append(f"{where}: s3.credentials_file {t.s3.credentials_file} cannot be read ({why}); fix the path, or "
                        "remove [s3] if the cluster has no S3 endpoint to drill")
    return problems


def check_credentials(t: Target) -> None:
    """Raise TargetError (one line: the first problem, and how many more) if a named credential is missing."""
    problems = credential_problems(t)
    if problems:
        more = f" (and {len(problems) - 1} more credential problem(s): drill target --target {t.path} lists them)" if len(problems) > 1 else ""
        raise TargetError(problems[0] + more)
