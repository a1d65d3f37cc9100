"""The data directory: what lives where, and first-start creation (``govledger init``).

::

    DATA/
      keys/authority.key   authority signing key (decisions, artifacts), 0600
      keys/ledger.key      ledger signing key (checkpoints), 0600
      keyring.json         trusted principals (ledger.core.keys documents the format)
      policies/            Cedar policies + schema (processors/policy.py)
      ledger.db            the Merkle ledger (the sequencer is its only writer)
      ledger.vkey          the log's C2SP verifier key
      processor.db         the processor journal (processors/journal.py)

:func:`init_data_dir` creates whatever is missing and never overwrites: keys, keyring and
policies that exist are kept, so an operator's own files always win.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ledger.core.keys import Principal, principal_document
from ledger.errors import ConfigError
from ledger.keyfiles import generate_keypair, load_signer
from ledger.sequencer import init_ledger

AUTHORITY_IDENTITY = "govledger:authority"


@dataclass(frozen=True, slots=True)
class DataDir:
    root: Path

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def authority_key(self) -> Path:
        return self.keys / "authority.key"

    @property
    def keyring(self) -> Path:
        return self.root / "keyring.json"

    @property
    def policies(self) -> Path:
        return self.root / "policies"

    @property
    def ledger_db(self) -> Path:
        return self.root / "ledger.db"

    @property
    def journal(self) -> Path:
        return self.root / "processor.db"


@dataclass(slots=True)
class InitReport:
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def example_policies() -> Path:
    """The example Cedar policy set shipped with the package."""
    return Path(str(resources.files("processors") / "examples" / "policies"))


def init_data_dir(root: Path, origin: str) -> InitReport:
    """Create what is missing in ``root`` (module docstring). Raises ConfigError."""
    data = DataDir(root)
    report = InitReport()
    root.mkdir(parents=True, exist_ok=True)
    if data.authority_key.exists():
        authority = load_signer(data.authority_key)
        report.kept.append(str(data.authority_key))
    else:
        authority, path, _ = generate_keypair("authority", data.keys)
        report.created.append(str(path))
    if data.ledger_db.exists():
        report.kept.append(str(data.ledger_db))
    else:
        init_ledger(root, origin)
        report.created += [str(data.ledger_db), str(data.keys / "ledger.key")]
    if data.keyring.exists():
        report.kept.append(str(data.keyring))
    else:
        principal = Principal(AUTHORITY_IDENTITY, "*", authority.public_key,
                              frozenset({"authority"}))
        doc = {"version": 1, "principals": [dict(principal_document(principal))]}
        data.keyring.write_text(json.dumps(doc, indent=2) + "\n")
        report.created.append(str(data.keyring))
    if data.policies.exists():
        report.kept.append(str(data.policies))
    else:
        try:
            shutil.copytree(example_policies(), data.policies)
        except OSError as exc:
            raise ConfigError(f"cannot copy the example policies: {exc}") from exc
        report.created.append(str(data.policies))
    return report
