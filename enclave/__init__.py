"""The enclave: the only place dataset keys are unwrapped and data is computed on.

Today it is a software enclave: a separate worker process per operation, with core dumps
off, ptrace refused and (where the kernel allows) no network namespace. A hardware enclave
would produce the same attestation fields.
"""

from enclave._enclave import Enclave
from enclave._errors import DatasetError, EnclaveError, EnclaveKeyError, WorkerError
from enclave._records import ATTESTATION_FORMAT, DatasetRecord, RunAttestation, RunOutput

__all__ = [
    "ATTESTATION_FORMAT",
    "DatasetError",
    "DatasetRecord",
    "Enclave",
    "EnclaveError",
    "EnclaveKeyError",
    "RunAttestation",
    "RunOutput",
    "WorkerError",
]
