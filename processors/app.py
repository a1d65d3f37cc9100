"""Build the decision side from Settings: no work at import time.

``build_worker(settings, bootstrap)`` loads the authority key, keyring and Cedar policy
(refusing to start on any problem, with the Cedar error text), restores nothing yet (the
worker's ``start()`` does), and returns a :class:`~processors.worker.DecisionWorker`.
"""

from __future__ import annotations

from datetime import timedelta

from ledger.config import Settings
from ledger.core.keys import KeyRing, Signer
from ledger.datadir import DataDir
from ledger.errors import ConfigError
from ledger.kafka.topics import Topics
from ledger.keyfiles import load_keyring, load_signer
from processors.core.checks import Limits
from processors.core.engine import Engine
from processors.core.ratelimit import TokenBucketLimiter
from processors.journal import Journal
from processors.policy import PolicyBundle
from processors.reconcile import Reconciler
from processors.worker import DecisionWorker


def authority_identity(keyring: KeyRing, authority: Signer) -> str:
    """The identity the keyring gives the authority key. Raises ConfigError if none."""
    if authority.key_id not in keyring:
        raise ConfigError("the authority key is not in the keyring")
    principal = keyring.get(authority.key_id)
    if "authority" not in principal.roles:
        raise ConfigError(f"{principal.identity} lacks the authority role in the keyring")
    return principal.identity


def limits_from(settings: Settings) -> Limits:
    return Limits(max_clock_skew=timedelta(seconds=settings.max_clock_skew_s),
                  max_ttl=timedelta(seconds=settings.max_ttl_s),
                  max_depth=settings.max_lineage_depth)


def build_engine(settings: Settings, journal: Journal | None = None) -> Engine:
    """Engine from the data directory's key, keyring and policies. Raises ConfigError."""
    data = DataDir.of(settings)
    keyring = load_keyring(data.keyring)
    authority = load_signer(data.authority_key)
    return Engine(authority=authority, authority_identity=authority_identity(keyring, authority),
                  keyring=keyring, policy=PolicyBundle.load(data.policies),
                  limiter=TokenBucketLimiter(settings.rate_limit_per_s, settings.rate_limit_burst),
                  limits=limits_from(settings),
                  recall=journal.recall if journal is not None else None)


def build_worker(settings: Settings, bootstrap: str) -> DecisionWorker:
    """The decision worker of the data directory, reconciled with its ledger (the journal
    against ``ledger.db``: processors/reconcile.py). Raises ConfigError (no ledger, keys,
    keyring or policy) or Unavailable."""
    data = DataDir(settings.data_dir)
    if not data.ledger_db.exists():
        raise ConfigError(f"no ledger at {data.ledger_db}: the processor reconciles its "
                          "journal with the ledger; run `govledger init` first")
    journal = Journal(data.journal)
    engine = build_engine(settings, journal)
    reconciler = Reconciler(data.journal, data.ledger_db, keyring=engine.keyring,
                            authority_identity=engine.identity,
                            limits=engine.limits)
    # Embedded mode: one worker owns every partition and keeps its offsets in the journal
    # (no group rebalances, survives a broker wipe). External Kafka: a consumer group, so
    # workers scale with partitions.
    return DecisionWorker(settings, bootstrap, Topics(settings.topic_prefix), engine, journal,
                          use_group=settings.use_processor_group, reconciler=reconciler)
