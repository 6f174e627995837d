"""Power through a BMC over Redfish: ComputerSystem.Reset ForceOff / On, and PowerState.

Plain ``requests`` rather than the ``sushy`` client: three calls (GET the system,
POST a reset, poll PowerState) do not justify sushy's OpenStack dependency tree
(oslo.*, stevedore, pbr) in a test harness, and plain HTTP keeps error messages
(401 vs unreachable vs unknown system) under our control.

Credentials: HTTP basic auth, user ``power.username``, password from
``power.password_env`` / ``power.password_file``; never logged.  TLS is verified
(set REQUESTS_CA_BUNDLE for a BMC's private CA).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from drills.faults.errors import BackendUnavailable, FaultError

from drills.faults.interface import UnsupportedOps, wait_for_power_state
from drills.hostaccess import HostAccess
from drills.target import Host, Target, TargetError, read_secret

HANDLES = {"power": ("redfish",)}


def base_url(host: Host) -> str:
    """power.address, with power.port if the address has none; http(s) scheme required."""
    addr = host.power.address.rstrip("/")
    if "://" not in addr:
        addr = "https://" + addr  # BMCs serve Redfish over TLS unless told otherwise
    parts = urlsplit(addr)
    netloc = parts.netloc
    if host.power.port and ":" not in netloc.rsplit("]", 1)[-1]:
        netloc = f"{netloc}:{host.power.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass
class RedfishBackend(UnsupportedOps):
    kind = "redfish"
    timeout_s: float = 10.0  # per HTTP request
    settle_timeout_s: float = 90.0  # real BMCs take seconds to change power state
    poll_interval_s: float = 0.5

    def _session(self, host: Host) -> Any:
        import requests  # late: only targets with Redfish BMCs need it

        try:
            password = read_secret(host.power.password_env, host.power.password_file, f"host {host.name} BMC password")
        except TargetError as e:
            raise BackendUnavailable(host.name, str(e)) from None
        s = requests.Session()
        s.auth = (host.power.username, password)
        s.headers.update({"Accept": "application/json"})
        return s

    def _system_url(self, host: Host) -> str:
        if not host.power.system_id:
            raise BackendUnavailable(host.name, "power.system_id (the Redfish ComputerSystem id) is not set in the target")
        return f"{base_url(host)}/redfish/v1/Systems/{host.power.system_id}"

    def _request(self, host: Host, method: str, url: str, **kw: Any) -> Any:
        import requests

        s = self._session(host)
        try:
            r = s.request(method, url, timeout=self.timeout_s, **kw)
        except requests.exceptions.SSLError as e:
            raise BackendUnavailable(host.name, f"BMC {base_url(host)}: TLS verification failed ({e.__class__.__name__})") from None
        except requests.exceptions.ConnectionError:
            raise BackendUnavailable(host.name, f"BMC {base_url(host)}: cannot connect (unreachable or wrong address/port)") from None
        except requests.exceptions.Timeout:
            raise BackendUnavailable(host.name, f"BMC {base_url(host)}: no answer within {self.timeout_s:.0f}s") from None
        finally:
            s.close()
        if r.status_code in (401, 403):
            raise BackendUnavailable(host.name, f"BMC {base_url(host)}: credentials rejected (HTTP {r.status_code}) for user {host.power.username!r}")
        if r.status_code == 404:
            raise BackendUnavailable(host.name, f"BMC {base_url(host)}: no such resource {urlsplit(url).path} (check power.system_id)")
        if r.status_code >= 400:
            raise FaultError(f"host {host.name}: BMC {method} {urlsplit(url).path} -> HTTP {r.status_code}: {r.text[:200]}")
        return r

    def system(self, host: Host) -> dict[str, Any]:
        return self._request(host, "GET", self._system_url(host)).json()

    def power_state(self, host: Host) -> str:
        return str(self.system(host).get("PowerState", "")).lower()  # "on" | "off" | "poweringon" | ...

    def _reset(self, host: Host, reset_type: str) -> None:
        sysinfo = self.system(host)
        action = sysinfo.get("Actions", {}).get("#ComputerSystem.Reset", {})
        allowed = action.get("ResetType@Redfish.AllowableValues")
        if allowed and reset_type not in allowed:
            raise FaultError(f"host {host.name}: BMC does not allow ResetType {reset_type} (allows {', '.join(allowed)})")
        target = action.get("target") or f"{urlsplit(self._system_url(host)).path}/Actions/ComputerSystem.Reset"
        url = base_url(host).rstrip("/") + target if target.startswith("/") else target
        self._request(host, "POST", url, json={"ResetType": reset_type})

    def _wait_for(self, host: Host, state: str) -> None:
        wait_for_power_state(lambda: self.power_state(host), host, state, self.settle_timeout_s, self.poll_interval_s, "PowerState")

    # -- HostBackend --
    def probe(self, host: Host, role: str) -> None:
        if role != "power":
            super().probe(host, role)
        self.power_state(host)

    def power_off(self, host: Host) -> None:
        self._reset(host, "ForceOff")  # a cut, not a graceful shutdown
        self._wait_for(host, "off")

    def power_on(self, host: Host, start_daemons: bool = True) -> None:
        if self.power_state(host) != "on":
            self._reset(host, "On")
        self._wait_for(host, "on")


def make_backend(target: Target, host_access: HostAccess | None = None) -> RedfishBackend:  # host_access: the BMC is not a host
    return RedfishBackend()
