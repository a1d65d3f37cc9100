"""Build the decision side from Settings: no work at import time.

``build_worker(settings, bootstrap)`` loads the authority key, keyring and Cedar policy
(refusing to start on any problem, with the Cedar error text), restores nothing yet (the
worker's ``start()`` does), and returns a :class:`~processors.worker.DecisionWorker`.
"""

from __future__ import annotations

from datetime import timedelta

from ledger.clock import utc_now
from ledger.config import Settings
from ledger.core.governance import GovernanceState
from ledger.core.keys import KeyRing, Principal
from ledger.datadir import DataDir
from ledger.errors import ConfigError
from ledger.kafka.topics import Topics
from ledger.keyfiles import load_keyring, load_signer
from ledger.log.governance import AUTHORITY_IDENTITY, anchors
from ledger.log.store import LedgerStore
from processors.core.engine import Engine
from processors.core.freshness import Limits
from processors.core.ratelimit import TokenBucketLimiter
from processors.genesis import (
    GENESIS_META,
    authority_identity,
    ensure_genesis,
    has_genesis,
    restore_from_ledger,
)
from processors.journal import Journal
from processors.policy import PolicyBundle
from processors.reconcile import Reconciler
from processors.worker import DecisionWorker


def limits_from(settings: Settings) -> Limits:
    return Limits(max_clock_skew=timedelta(seconds=settings.max_clock_skew_s),
                  max_ttl=timedelta(seconds=settings.max_ttl_s),
                  max_depth=settings.max_lineage_depth)


def build_engine(settings: Settings, journal: Journal | None = None) -> Engine:
    """Engine from the data directory's authority key and the operator's public key (the
    genesis anchor). With a ``journal`` its governance state is empty: the worker restores
    it from the journal (processors/genesis.py); without one (tools, tests), it is restored
    from the ledger. Raises ConfigError or Unavailable."""
    data = DataDir.of(settings)
    authority = load_signer(data.authority_key)
    operator, anchor = anchors(settings.data_dir)
    if anchor.public_key != authority.public_key:
        raise ConfigError(f"{data.authority_key} does not match keys/authority.pub")
    engine = Engine(authority=authority, authority_identity=AUTHORITY_IDENTITY,
                    governance=GovernanceState(), compile_policy=PolicyBundle.from_files,
                    operator=operator, limiter=TokenBucketLimiter(settings.rate_limit_per_s,
                                                                  settings.rate_limit_burst),
                    limits=limits_from(settings),
                    recall=journal.recall if journal is not None else None)
    if journal is None and data.ledger_db.exists():  # a tool's engine: governance as logged
        with LedgerStore(data.ledger_db) as store:
            restore_from_ledger(engine, store)
    return engine


def check_files(settings: Settings) -> None:
    """What the first start reads: the keys, keyring.json and policies/ (the genesis
    import formats); the operator key only while no genesis is written (after it, the key
    may be offline). Raises ConfigError naming the problem."""
    data = DataDir.of(settings)
    keyring = load_keyring(data.keyring)
    authority_identity(keyring, load_signer(data.authority_key))
    if not data.ledger_db.exists() or not _genesis_written(data):
        load_signer(data.operator_key)
    PolicyBundle.load(data.policies)
    build_engine(settings)


def build_worker(settings: Settings, bootstrap: str) -> DecisionWorker:
    """The decision worker of the data directory, reconciled with its ledger (the journal
    against ``ledger.db``: processors/reconcile.py). Raises ConfigError (no ledger, keys,
    keyring or policy) or Unavailable."""
    data = DataDir.of(settings)
    if not data.ledger_db.exists():
        raise ConfigError(f"no ledger at {data.ledger_db}: the processor reconciles its "
                          "journal with the ledger; run `govledger init` first")
    journal = Journal(data.journal)
    if journal.meta(GENESIS_META) is None and data.operator_key.exists():
        # first start: nothing else is logged yet
        ensure_genesis(settings.data_dir, utc_now(), authority_key=settings.authority_key_file,
                       ledger_key=settings.ledger_key_file,
                       operator_key=settings.operator_key_file)
    engine = build_engine(settings, journal)
    authority = Principal(AUTHORITY_IDENTITY, "*", engine.authority.public_key,
                          frozenset({"authority"}))
    reconciler = Reconciler(data.journal, data.ledger_db, keyring=engine.keyring,
                            authority_identity=engine.identity,
                            limits=engine.limits, authority=KeyRing([authority]))
    # Embedded mode: one worker owns every partition and keeps its offsets in the journal
    # (no group rebalances, survives a broker wipe). External Kafka: a consumer group, so
    # workers scale with partitions.
    return DecisionWorker(settings, bootstrap, Topics(settings.topic_prefix), engine, journal,
                          use_group=settings.use_processor_group, reconciler=reconciler)


def _genesis_written(data: DataDir) -> bool:
    with LedgerStore(data.ledger_db) as store:
        return has_genesis(store)
