"""OpenIPMI's ipmi_sim on 127.0.0.1 with a chassis whose power is a file the test can see.

lan.conf's ``chassis_control "<prog>"`` makes ipmi_sim run ``<prog> get power``
(answer ``power:0|1``) for Get Chassis Status and ``<prog> set power 0|1`` for
Chassis Control, so ``ipmitool chassis power off`` really runs our script, which
removes ``power_on`` and appends the call to ``calls.log``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .common import free_port, stop, wait_until

CHASSIS_SCRIPT = """#!/bin/sh
# ipmi_sim chassis_control program: "<prog> get power" -> "power:N"; "<prog> set power N".
dir=$(dirname "$0")
echo "$*" >> "$dir/calls.log"
case "$1" in
  get) if [ -e "$dir/power_on" ]; then echo "power:1"; else echo "power:0"; fi ;;
  set) if [ "$2" = power ]; then
         if [ "$3" = 1 ]; then touch "$dir/power_on"; else rm -f "$dir/power_on"; fi
         # the host this BMC drives, if any: run in the background, ipmi_sim waits for us
         if [ -x "$dir/power_hook" ]; then "$dir/power_hook" "$3" >> "$dir/hook.log" 2>&1 & fi
       fi ;;
esac
exit 0
"""

# One BMC at IPMB 0x20 with chassis support (device support bits 0x9f include the chassis).
CMD_CONF = """mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
mc_enable 0x20
"""


def lan_conf(port: int, user: str, password: str, chassis: Path) -> str:
    return f"""name "drillbmc"
set_working_mc 0x20
startlan 1
  addr 127.0.0.1 {port}
  priv_limit admin
  allowed_auths_callback none md2 md5 straight
  allowed_auths_user none md2 md5 straight
  allowed_auths_operator none md2 md5 straight
  allowed_auths_admin none md2 md5 straight
  guid a123456789abcdefa123456789abcdef
endlan
user 2 true "{user}" "{password}" admin 10 none md2 md5 straight
chassis_control "{chassis}"
"""


@dataclass
class IpmiSim:
    workdir: Path
    user: str = "drill"
    password: str = "bmc-s3cret"
    port: int = 0
    proc: subprocess.Popen | None = None
    env_var: str = field(default="")
    power_hook: str = ""  # shell script body run with $1 = 0|1 after each power change


    @staticmethod
    def available() -> str:
        """'' if ipmi_sim and ipmitool are installed, else why not."""
        missing = [b for b in ("ipmi_sim", "ipmitool") if shutil.which(b) is None]
        return f"{' and '.join(missing)} not installed (Debian packages openipmi, ipmitool)" if missing else ""

    @property
    def power_file(self) -> Path:
        return self.workdir / "power_on"

    @property
    def calls(self) -> list[str]:
        p = self.workdir / "calls.log"
        return p.read_text().splitlines() if p.exists() else []

    def set_calls_seen(self) -> int:
        return len(self.calls)

    def start(self) -> "IpmiSim":
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "state").mkdir(exist_ok=True)
        chassis = self.workdir / "chassis_control.sh"
        chassis.write_text(CHASSIS_SCRIPT)
        chassis.chmod(0o755)
        self.power_file.touch()  # the "host" starts powered
        if self.power_hook:
            hook = self.workdir / "power_hook"
            hook.write_text("#!/bin/sh\n" + self.power_hook + "\n")
            hook.chmod(0o755)
        self.port = self.port or free_port(socket.SOCK_DGRAM)
        (self.workdir / "lan.conf").write_text(lan_conf(self.port, self.user, self.password, chassis))
        (self.workdir / "cmd.conf").write_text(CMD_CONF)
        log = open(self.workdir / "ipmi_sim.log", "w")
        self.proc = subprocess.Popen(
            ["ipmi_sim", "-n", "-c", str(self.workdir / "lan.conf"), "-f", str(self.workdir / "cmd.conf"),
             "-s", str(self.workdir / "state")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        wait_until(self._answers, 10, "ipmi_sim", self.proc)
        return self

    def _answers(self) -> bool:
        r = subprocess.run(
            ["ipmitool", "-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-E",
             "-N", "1", "-R", "1", "chassis", "power", "status"],
            env={**os.environ, "IPMI_PASSWORD": self.password}, capture_output=True, text=True, timeout=10,
        )
        return r.returncode == 0

    def stop(self) -> None:
        stop(self.proc)

    def __enter__(self) -> "IpmiSim":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
