"""Workloads: fio (real binary, per-interval figures on the timeline) and the verifying writer.

    drills.workloads.fio       FioJob, run_job, start_job, run_clients, parse_fio_output, FioResult
    drills.workloads.verifier  VerifyingWriter, VerifierConfig, RadosObjectBackend, RbdImageBackend,
                               MemoryBackend, CheckReport
"""

from drills.workloads.fio import (FioConfigError, FioError, FioJob, FioResult, FioRunner, parse_fio_output,
                                  run_clients, run_job, start_job)
from drills.workloads.verifier import (CheckReport, MemoryBackend, RadosObjectBackend, RbdImageBackend,
                                       VerifierBackend, VerifierConfig, VerifyingWriter, load_journal,
                                       remove_behind_verifier)

__all__ = [
    "FioConfigError", "FioError", "FioJob", "FioResult", "FioRunner", "parse_fio_output", "run_clients",
    "run_job", "start_job",
    "CheckReport", "MemoryBackend", "RadosObjectBackend", "RbdImageBackend", "VerifierBackend",
    "VerifierConfig", "VerifyingWriter", "load_journal", "remove_behind_verifier",
]
