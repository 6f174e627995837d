"""The fault room's former single module, kept so that existing imports keep working.

New code imports from the module for its audience:
  drills.faults.errors     FaultError and its kinds, DrillSignal       (everyone)
  drills.faults.interface  HostBackend, UnsupportedOps, ROLES         (backend authors)
  drills.faults.fault      Fault, Outage                               (authors of fault kinds)
  drills.faults.kinds      PowerCut, DaemonKill, NetworkPartition, ... (drills: the fail-stop catalogue)
  drills.faults.gray       SlowDisk, CpuStarvation, SlowLink, Flapping (drills: gray faults)
  drills.faults.session    FaultSession, fault_from_record, heal_pending, the registry (runners)
"""

from __future__ import annotations

from drills.faults.errors import (  # noqa: F401 - re-exported
    BackendUnavailable,
    DrillSignal,
    FaultError,
    HealFailed,
    Unsupported,
)
from drills.faults.interface import (  # noqa: F401 - re-exported
    BackendResolver,
    HostBackend,
    ROLES,
    UnsupportedOps,
    wait_for_power_state,
)
from drills.faults.fault import (  # noqa: F401 - re-exported
    Fault,
    Outage,
    _default_resolver,
    _each,
)
from drills.faults.kinds import (  # noqa: F401 - re-exported
    Blackhole,
    DaemonHang,
    DaemonHold,
    DaemonKill,
    DaemonStop,
    NetworkPartition,
    PacketLoss,
    PowerCut,
    REST,
    RackPowerCut,
    _DaemonFault,
)
from drills.faults.session import (  # noqa: F401 - re-exported
    FAULT_TYPES,
    FaultSession,
    LAZY_FAULT_TYPES,
    PendingFaults,
    _HANDLED_SIGNALS,
    _Injected,
    fault_from_record,
    fault_kinds,
    fault_type,
    heal_pending,
    iter_fault_types,
)
