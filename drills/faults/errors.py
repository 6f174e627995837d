"""What can go wrong with a fault: errors every audience catches (drills, backends, the session)."""

from __future__ import annotations

import signal as signal_mod


class FaultError(Exception):
    """A fault could not be injected or healed; the message names the host and why."""


class BackendUnavailable(FaultError):
    """probe() failed: the host's BMC/SSH cannot be reached or refuses the credentials."""

    def __init__(self, host: str, reason: str):
        super().__init__(f"host {host}: {reason}")
        self.host = host
        self.reason = reason


class Unsupported(FaultError):
    """The host's backend cannot do this (e.g. power.kind = none and a power cut)."""


class HealFailed(FaultError):
    """One or more parts of a heal failed; the others were still attempted."""


class DrillSignal(BaseException):
    """SIGTERM/SIGHUP turned into an exception so that every ``finally`` (heals) runs.

    A BaseException, like KeyboardInterrupt, so ``except Exception`` in a drill
    does not swallow it.
    """

    def __init__(self, signum: int):
        super().__init__(f"received {signal_mod.Signals(signum).name}")
        self.signum = signum
