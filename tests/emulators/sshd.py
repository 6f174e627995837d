"""A real OpenSSH sshd on 127.0.0.1 with a throwaway host key and one authorized key."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .common import free_port, stop, wait_until

SSHD = "/usr/sbin/sshd"


@dataclass
class Sshd:
    workdir: Path
    port: int = 0
    proc: subprocess.Popen | None = None

    @staticmethod
    def available() -> str:
        if not os.path.exists(SSHD):
            return f"{SSHD} not installed (Debian package openssh-server)"
        if shutil.which("ssh-keygen") is None:
            return "ssh-keygen not installed (Debian package openssh-client)"
        if os.geteuid() != 0:
            return "sshd for the test logs in as root: run the tests as root"
        return ""

    @property
    def client_key(self) -> Path:
        return self.workdir / "client_key"

    @property
    def other_key(self) -> Path:
        """A valid key that is not authorized (for the wrong-key test)."""
        return self.workdir / "other_key"

    def _keygen(self, path: Path) -> None:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)

    def start(self) -> "Sshd":
        self.workdir.mkdir(parents=True, exist_ok=True)
        for k in ("host_key", "client_key", "other_key"):
            self._keygen(self.workdir / k)
        (self.workdir / "authorized_keys").write_text((self.workdir / "client_key.pub").read_text())
        self.port = self.port or free_port()
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        cfg = self.workdir / "sshd_config"
        cfg.write_text(
            "\n".join(
                [
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.workdir / 'host_key'}",
                    f"AuthorizedKeysFile {self.workdir / 'authorized_keys'}",
                    f"PidFile {self.workdir / 'sshd.pid'}",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",  # the temp dir's modes are pytest's, not ~/.ssh's
                    "LogLevel ERROR",
                    "",
                ]
            )
        )
        log = open(self.workdir / "sshd.log", "w")
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(cfg), "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        wait_until(self._listening, 10, "sshd", self.proc)
        return self

    def _listening(self) -> bool:
        import socket

        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
            return s.recv(4).startswith(b"SSH-")

    def stop(self) -> None:
        stop(self.proc)

    def __enter__(self) -> "Sshd":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
