"""The key steps of ``govledger init`` (ledger/datadir.py runs them in order): keep every
usable key, make a missing one only while nothing signed with it can exist, write each
public key beside its key and, for a key kept outside the data directory, its trust anchor
in DATA/keys (authority.pub, operator.pub: what the roles without that key follow governance
from). A file that does not check out is refused with a ConfigError naming it and what to
do. :class:`InitReport` records what was created, kept, repaired and removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ledger.core.keys import Signer
from ledger.errors import ConfigError
from ledger.keyfiles import (
    file_error,
    generate_keypair,
    load_keyring,
    public_key_text,
    read_key_file,
    write_atomic,
    write_derived,
)

if TYPE_CHECKING:
    from ledger.datadir import DataDir


@dataclass(slots=True)
class InitReport:
    """What :func:`init_data_dir` did. ``repaired``: files an interrupted setup left unusable,
    written again; ``removed``: temporary files it left behind."""

    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def keep_authority_key(data: DataDir, report: InitReport) -> Signer:
    """Keep a usable authority key; make one when there is none (or only a cut-off write)
    and no keyring names an authority, which is what the processor signs under."""
    path = data.authority_key
    if (signer := kept_key(data, path, "authority.pub", report)) is not None:
        return signer
    if data.keyring.exists() and names_authority(data.keyring):
        state = "only partly written" if path.exists() else "missing"
        raise ConfigError(
            f"{path} is {state}, but {data.keyring} names an authority (or cannot be read), "
            f"so decisions may be signed with that key: restore {path} from a backup (or, if "
            f"this directory never ran, remove {data.keyring} and {path} and run init again)")
    signer = new_key(path, report)
    write_anchor(data, path, "authority.pub", signer, report, new=True)
    return signer


def kept_key(data: DataDir, path: Path, anchor: str, report: InitReport) -> Signer | None:
    """The usable key at ``path``, kept, its public key beside it and its ``anchor`` in
    DATA/keys checked (written when missing); None when there is none or only a cut-off
    write. Raises ConfigError for a public key or anchor of another key."""
    signer = read_key_file(path)
    if signer is not None:
        public_key_file(path, signer, report)
        write_anchor(data, path, anchor, signer, report)
        report.kept.append(str(path))
    return signer


def write_anchor(data: DataDir, key_path: Path, name: str, signer: Signer,
                 report: InitReport, *, new: bool = False) -> None:
    """DATA/keys/``name`` (authority.pub, operator.pub), the trust anchor the roles without
    that key (the sequencer, the API; every role for the operator's) follow governance
    from, when the key lives elsewhere. For a ``new`` key it is written over whatever is
    there (nothing can have been signed with it); for a kept one a different anchor is
    refused."""
    anchor = data.keys / name
    if key_path.with_suffix(".pub") == anchor:
        return  # beside the key: public_key_file and new_key write it
    if new:
        existed = anchor.exists()
        write_atomic(anchor, public_key_text(signer), replace=True)
        (report.repaired if existed else report.created).append(str(anchor))
        return
    if derived_file(anchor, public_key_text(signer), report,
                     f"it does not match {key_path}: remove {anchor} and run init "
                     "again to have it written from the key"):
        report.kept.append(str(anchor))


def keep_operator_key(data: DataDir, report: InitReport, *, genesis_signed: bool) -> None:
    """Keep a usable operator key; make one while no governance genesis was signed with
    one (the ledger has no governance leaf yet; ledger.db comes after this step). After the
    genesis the key may be gone from here (kept offline, or mounted only into ``init``):
    its anchor DATA/keys/operator.pub is what every role reads. ``genesis_signed``: the
    ledger holds a governance genesis."""
    path = data.operator_key
    if kept_key(data, path, "operator.pub", report) is not None:
        return
    if genesis_signed:
        if (data.keys / "operator.pub").exists():  # the key is offline or not mounted here
            report.kept.append(str(data.keys / "operator.pub"))
            return  # the genesis is written: from now on only its anchor is read
        raise ConfigError(f"{path} is missing or only partly written, but the ledger's "
                          "governance genesis was signed with it: restore it from a backup")
    write_anchor(data, path, "operator.pub", new_key(path, report), report, new=True)


def names_authority(keyring: Path) -> bool:
    """Whether the keyring names an authority; a keyring that does not load may, too."""
    try:
        ring = load_keyring(keyring)
    except ConfigError:
        return True
    return bool(ring.with_role("authority"))


def new_key(key_path: Path, report: InitReport) -> Signer:
    """Generate DIR/NAME.key (and NAME.pub beside it), replacing a cut-off one and a .pub of
    a key that is gone."""
    pub_path = key_path.with_suffix(".pub")
    repaired = key_path.exists()
    try:
        key_path.unlink(missing_ok=True)
        pub_path.unlink(missing_ok=True)
    except OSError as exc:
        raise file_error(key_path, exc) from exc
    signer, _, _ = generate_keypair(key_path.stem, key_path.parent)
    (report.repaired if repaired else report.created).append(str(key_path))
    return signer


def public_key_file(key_path: Path, signer: Signer, report: InitReport) -> None:
    """Write NAME.pub from the key when it is missing or cut off; refuse a different one."""
    pub_path = key_path.with_suffix(".pub")
    derived_file(pub_path, public_key_text(signer), report,
                  f"it does not match {key_path}: remove {pub_path} and run init again to "
                  "have it written from the key")


def derived_file(path: Path, content: bytes, report: InitReport, wrong: str) -> bool:
    """:func:`ledger.keyfiles.write_derived`, reported. Returns whether it was kept."""
    done = write_derived(path, content, wrong)
    if done != "kept":
        (report.created if done == "created" else report.repaired).append(str(path))
    return done == "kept"
