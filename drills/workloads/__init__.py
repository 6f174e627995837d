"""Workloads: fio (real binary, per-interval figures on the timeline), locust S3 and the verifying writer.

    drills.workloads.fio       FioJob, run_job, start_job, run_clients, parse_fio_output, FioResult,
                               verify_written, FioVerifyResult (fio's own verify, read back after the job)
    drills.workloads.locust_s3 S3Workload, S3Endpoint, Distributed, run_s3, start_s3, S3Result
                               (runs locust in a subprocess; never imports locust)
    drills.workloads.verifier  VerifyingWriter, VerifierConfig, RadosObjectBackend, RbdImageBackend,
                               MemoryBackend, DropAckedWrite, CheckReport (every acknowledged write checked)
"""

from drills.workloads.fio import (FioConfigError, FioError, FioJob, FioResult, FioRunner, FioVerifyResult,
                                  parse_fio_output, run_clients, run_job, start_job, verify_written)
from drills.workloads.locust_s3 import (Distributed, LocustS3Runner, S3ConfigError, S3Endpoint, S3Result,
                                        S3Workload, S3WorkloadError, run_s3, start_s3)
from drills.workloads.verifier import (CheckReport, DropAckedWrite, MemoryBackend, RadosObjectBackend,
                                       RbdImageBackend, VerifierBackend, VerifierConfig, VerifyingWriter,
                                       load_journal, remove_behind_verifier)

__all__ = [
    "FioConfigError", "FioError", "FioJob", "FioResult", "FioRunner", "FioVerifyResult", "parse_fio_output",
    "run_clients", "run_job", "start_job", "verify_written",
    "Distributed", "LocustS3Runner", "S3ConfigError", "S3Endpoint", "S3Result", "S3Workload", "S3WorkloadError",
    "run_s3", "start_s3",
    "CheckReport", "DropAckedWrite", "MemoryBackend", "RadosObjectBackend", "RbdImageBackend", "VerifierBackend",
    "VerifierConfig", "VerifyingWriter", "load_journal", "remove_behind_verifier",
]
