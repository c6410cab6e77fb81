"""The wiring: one sandbox home, its ledger, enclave, policies and gateway state.

:class:`Sandbox` is what the CLI and the gateway talk to. It implements the gateway's
``JobProcessor``: admit (decide and record), execute (run in the enclave and record), and
the read-only views. Every signed job ends on the ledger, whatever its outcome.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fastapi import FastAPI

import ledger
import policies
from computations import DatasetSpec
from enclave import DatasetRecord, Enclave
from gateway import (
    Admission,
    Enterprise,
    Execution,
    JobDocument,
    StateStore,
    create_app,
    load_private_key,
)
from indomain import admission, budgets, encrypted_jobs, execution, uploads
from indomain.admission import digest
from indomain.approvals import ProposalDesk
from indomain.catalogue import catalogue_for
from indomain.errors import ConfigError, IndomainError
from indomain.gateway_lock import gateway_lock
from indomain.home import Home, check_private
from indomain.policy_diff import summary
from indomain.policy_requests import build_request
from indomain.registry import Registry
from indomain.reviews import ReviewStore
from indomain.run_journal import RunJournal


def write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Write a PEM private key with mode 0600; never replaces an existing file."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "wb") as f:
        f.write(pem)


@dataclass
class Sandbox:
    home: Home
    ledger: ledger.Ledger
    enclave: Enclave
    store: StateStore
    _policy_cache: tuple[str, policies.PolicySet] | None = field(default=None, repr=False)
    _registry: Registry | None = field(default=None, repr=False)
    _reviews: ReviewStore | None = field(default=None, repr=False)
    _accountant: budgets.Accountant | None = field(default=None, repr=False)
    _run_journal: RunJournal | None = field(default=None, repr=False)
    #: Bytes one enterprise's stored uploads may hold together (:mod:`indomain.uploads`).
    upload_quota: int = uploads.DEFAULT_UPLOAD_QUOTA

    @property
    def reviews(self) -> ReviewStore:
        """Proposed computations and their reviews."""
        if self._reviews is None:
            self._reviews = ReviewStore(self.home.state)
        return self._reviews

    @property
    def proposal_desk(self) -> ProposalDesk:
        """What the gateway's proposal endpoints call."""
        return ProposalDesk(self)

    @property
    def run_journal(self) -> RunJournal:
        """Enclave outputs not yet stored as results (:mod:`indomain.run_journal`)."""
        if self._run_journal is None:
            self._run_journal = RunJournal(self.home.state)
        return self._run_journal

    @property
    def registry(self) -> Registry:
        """Licences and dataset classes, read fresh at every decision."""
        if self._registry is None:
            self._registry = Registry(self.home.state)
        return self._registry

    # construction ---------------------------------------------------------------------

    @classmethod
    def init(cls, root: Path, *, origin: str | None = None) -> Sandbox:
        """Create a new home: keys (0600), empty ledger, empty state."""
        home = Home.create(root, origin=origin)
        ledger_key = Ed25519PrivateKey.generate()
        write_private_key(home.ledger_key, ledger_key)
        log = ledger.Ledger.create(home.ledger, origin=home.origin, signing_key=ledger_key)
        (home.keys / "ledger.pub").write_text(log.verifier_key + "\n")
        enclave = Enclave.initialise(keys_dir=home.keys, datasets_dir=home.datasets)
        # Entry 0 puts the enclave key on the ledger: auditors verify run attestations with it.
        log.append(
            "sandbox.created",
            {
                "origin": home.origin,
                "ledger_verifier_key": log.verifier_key,
                "enclave_public_key": base64.b64encode(
                    enclave.public_key.public_bytes_raw()
                ).decode(),
            },
        )
        return cls(home=home, ledger=log, enclave=enclave, store=StateStore(home.state))

    @classmethod
    def open(cls, root: Path) -> Sandbox:
        home = Home.open(root)
        key = load_private_key(check_private(home.ledger_key))
        # During a ledger key rotation (indomain ledger rotate-key) both keys sign.
        following = home.keys / "ledger.next.key"
        keys = [key, load_private_key(check_private(following))] if following.exists() else key
        return cls(
            home=home,
            ledger=ledger.Ledger.open(home.ledger, signing_key=keys),
            enclave=Enclave(keys_dir=home.keys, datasets_dir=home.datasets),
            store=StateStore(home.state),
        )

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()
        if self._reviews is not None:
            self._reviews.close()
        self.store.close()
        self.ledger.close()
        self.enclave.close()  # stops its pre-started workers

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def verifier_key(self) -> str:
        return self.ledger.verifier_key

    # bureau operations ----------------------------------------------------------------

    def import_dataset(self, source: Path, *, name: str, manifest: Path) -> DatasetRecord:
        try:
            data = yaml.safe_load(manifest.read_text())
        except FileNotFoundError:
            raise ConfigError(f"no manifest at {manifest}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{manifest} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{manifest} must be a YAML mapping")
        spec = DatasetSpec.from_manifest(data, name=name)
        record = self.enclave.import_dataset(source, spec)
        self.ledger.append(
            "dataset.imported",
            {
                "dataset": record.name,
                "content_hash": record.content_hash,
                "rows_rounded": record.rounded_row_count,
                "manifest_digest": digest(json.dumps(spec.to_manifest(), sort_keys=True).encode()),
                "min_group_size": spec.min_group_size,
            },
        )
        return record

    def register_enterprise(
        self,
        name: str,
        public_key_file: Path,
        *,
        licence_number: str = "",
        licence_expires: datetime | None = None,
    ) -> Enterprise:
        try:
            key = serialization.load_pem_public_key(public_key_file.read_bytes())
        except FileNotFoundError:
            raise ConfigError(f"no public key file at {public_key_file}") from None
        except ValueError:
            raise ConfigError(f"{public_key_file} is not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{public_key_file} is not an Ed25519 public key")
        self.registry.check_licence_number(name, licence_number)  # before anything is stored
        enterprise = self.store.register_enterprise(name, key)
        licence = self.registry.set_licence(
            name, licence_number=licence_number, expires=licence_expires, status="active"
        )
        self.ledger.append(
            "enterprise.registered",
            {
                "enterprise": name,
                "public_key": enterprise.public_key_b64,
                "licence": licence.to_json(),
            },
        )
        return enterprise

    def update_licence(
        self,
        name: str,
        *,
        status: str | None = None,
        licence_number: str | None = None,
        expires: datetime | None = None,
    ) -> Any:
        """Change a registered enterprise's licence (suspend, reinstate, expire, renew);
        recorded on the ledger and enforced from the next decision on."""
        if name not in {e.name for e in self.store.enterprises()}:
            raise ConfigError(f"no registered enterprise named {name!r}")
        licence = self.registry.set_licence(
            name, licence_number=licence_number, expires=expires, status=status
        )
        self.ledger.append("enterprise.licence", {"licence": licence.to_json()})
        return licence

    def classify_dataset(self, name: str, *, sensitivity: int, groups: tuple[str, ...]) -> Any:
        """Set a dataset's sensitivity and groups for policies; recorded on the ledger."""
        self.enclave.dataset(name)  # raises for an unknown dataset
        value = self.registry.classify(name, sensitivity=sensitivity, groups=groups)
        self.ledger.append(
            "dataset.classified",
            {"dataset": name, "sensitivity": value.sensitivity, "groups": list(value.groups)},
        )
        return value

    def access_request(
        self,
        job: JobDocument,
        *,
        columns: tuple[str, ...] = (),
        result_size: int | None = None,
        when: datetime | None = None,
        epsilon: Decimal | None = None,
    ) -> policies.AccessRequest:
        """The policy request for ``job``, with licence and dataset class from the registry
        (``epsilon``: what the checked plan spends, see :mod:`indomain.admission`)."""
        return build_request(
            self.registry,
            job,
            columns=columns,
            result_size=result_size,
            when=when or datetime.now(UTC),
            epsilon=epsilon,
        )

    @property
    def policy_set(self) -> policies.PolicySet | None:
        """The applied policies, re-read when their files change (another process may
        apply a new version while the gateway runs); validated once per version."""
        files = sorted(self.home.policies.glob("*.cedar"))
        if not files:
            return None
        digest = hashlib.sha256()
        for path in [self.home.policies / "schema.cedarschema", *files]:
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        key = digest.hexdigest()
        if self._policy_cache is None or self._policy_cache[0] != key:
            self._policy_cache = (key, policies.PolicySet.load(self.home.policies))
        return self._policy_cache[1]

    def apply_policies(
        self, directory: Path, *, author: str = ""
    ) -> tuple[policies.PolicySet, int]:
        """Validate, install and record a policy version with its author and a summary of
        what changed (policies, and past decisions that would now differ); returns it and
        its ledger index. An invalid set raises before anything is written."""
        policy_set = policies.PolicySet.load(directory)
        try:
            previous = self.policy_set
        except policies.PolicyError:
            previous = None
        diff = summary(self, previous, policy_set)
        policy_set.save(self.home.policies)
        entry = self.ledger.append(
            "policy.applied",
            {
                "policy_version": policy_set.version,
                "policy_ids": list(policy_set.policy_ids),
                "files": {n: digest(t.encode()) for n, t in sorted(policy_set.files.items())},
                "author": author,
                "diff": diff,
            },
        )
        return policy_set, entry.index

    # JobProcessor ---------------------------------------------------------------------

    def admit(self, job: JobDocument, *, job_id: str, signature: str) -> Admission:
        """Decide on a signed job and record the outcome (:mod:`indomain.admission`)."""
        if job.computation in encrypted_jobs.RESOLVED_COMPUTATIONS:
            # Its uploads cannot be pruned while it is admitted (indomain.uploads).
            with encrypted_jobs.UPLOADS_LOCK:
                return admission.admit(self, job, job_id=job_id, signature=signature)
        return admission.admit(self, job, job_id=job_id, signature=signature)

    def execute(self, job: JobDocument, *, job_id: str, admission: Admission) -> Execution:
        """Run an admitted job once, or resume it after a crash (:mod:`indomain.execution`)."""
        return execution.execute(self, job, job_id=job_id, admission=admission)

    def store_upload(
        self,
        *,
        enterprise: str,
        kind: str,
        digest: str,
        source: Path,
        sha256: str | None = None,
        context: str | None = None,
    ) -> dict[str, Any]:
        """Check and keep an encrypted job's upload, whose bytes are in the file ``source``
        (:mod:`indomain.encrypted_jobs`)."""
        return encrypted_jobs.store_upload(
            self,
            enterprise=enterprise,
            kind=kind,
            digest=digest,
            source=source,
            sha256=sha256,
            context=context,
            quota=self.upload_quota,
        )

    def upload_limit(self, kind: str) -> int:
        """The most bytes an upload of ``kind`` may hold; the gateway refuses a larger one
        before reading it."""
        return encrypted_jobs.upload_limit(kind)

    def upload_room(self, enterprise: str, kind: str = "", digest: str = "") -> int:
        """Bytes ``enterprise`` may still upload before its quota is full (an upload of
        ``kind`` and ``digest`` that is already kept takes no more room); the gateway
        refuses a longer body before reading it."""
        return uploads.upload_room(self, enterprise, kind=kind, digest=digest)

    def prune_uploads(self, *, max_age: timedelta = uploads.DEFAULT_MAX_AGE) -> uploads.PruneReport:
        """Remove the uploads no unfinished job needs (:mod:`indomain.uploads`)."""
        return uploads.prune_uploads(self, max_age=max_age)

    # privacy budget -------------------------------------------------------------------

    @property
    def accountant(self) -> budgets.Accountant:
        """The privacy budget accountant (tables in state.sqlite)."""
        if self._accountant is None:
            self._accountant = budgets.Accountant(self.home.state)
        return self._accountant

    def budgets(self, enterprise: str | None = None) -> list[dict[str, Any]]:
        """Spent and remaining budget per dataset, for one enterprise or all of them."""
        names = [enterprise] if enterprise else [e.name for e in self.store.enterprises()]
        specs = [record.spec for record in self.enclave.datasets()]
        return budgets.budget_views(self.accountant, specs, names)

    def has_released(self, job_id: str) -> bool:
        """Whether ``job_id`` succeeded, so its stored release can answer equivalent queries."""
        try:
            return self.store.job(job_id).status == "succeeded"
        except IndomainError:
            return False

    def record_failure(self, job: JobDocument, *, job_id: str, reason: str) -> int:
        entry = self.ledger.append(
            "run.failed",
            {
                "job_id": job_id,
                "enterprise": job.enterprise,
                "dataset": job.dataset,
                "reason": reason,
            },
        )
        return entry.index

    def catalogue(self) -> list[dict[str, Any]]:
        """Schema, column classes and rounded sizes: what a licensed enterprise may browse."""
        out = []
        for record in self.enclave.datasets():
            spec = record.spec
            out.append(
                {
                    "name": record.name,
                    "description": spec.description,
                    "privacy_unit": spec.privacy_unit,
                    "min_group_size": spec.min_group_size,
                    "rows_rounded": record.rounded_row_count,
                    "columns": [
                        {
                            "name": c.name,
                            "class": c.cls.value,
                            "dimension": c.dimension,
                            "type": record.column_types.get(c.name, "UNKNOWN"),
                            "description": c.description,
                        }
                        for c in spec.columns
                    ],
                }
            )
        return out

    def catalogue_for(self, enterprise: str | None) -> list[dict[str, Any]]:
        """:meth:`catalogue` with privacy rules, a synthetic sample and, for an
        enterprise, the computations and purposes its grants allow now."""
        return catalogue_for(self, enterprise)

    def checkpoint(self) -> str:
        return self.ledger.checkpoint()

    def app(self, *, lock: bool = True, **kwargs: Any) -> FastAPI:
        """The gateway app for this home; it holds the home's gateway lock while it serves
        (``lock=False`` when the caller holds it, as ``indomain serve`` does)."""
        exclusive = gateway_lock(self.home.root) if lock else None
        return create_app(
            store=self.store, processor=self, ledger=self.ledger, exclusive=exclusive, **kwargs
        )
