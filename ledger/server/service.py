"""The composition root: builds, starts, watches and stops broker, topics, processor,
sequencer and the HTTP API (the API's backend is ``ledger.server.backend``).

``govledger up`` runs the API in this process and the processor, the sequencer and the
monitor each in a child process of its own (ledger/server/children.py); ``govledger
processor``, ``sequencer`` and ``api`` run one each (docker-compose scales them). Start order:

1. the data directory (``govledger init`` material is created if missing, and said where);
2. the broker: the embedded Tansu broker on a free loopback port, or ``kafka_bootstrap``;
3. the topics, created explicitly with the configured partitions;
4. the sequencer (verifies the ledger against its last signed checkpoint first: a mismatch
   refuses to start), the processor (restored from its journal), the API.

SIGINT/SIGTERM set the stop event; components stop in reverse order. Fail fast: every
component is watched (the embedded broker process, the processor and sequencer children,
the HTTP server and its decision consumer); one that ends or fails stops the whole service
with exit 3 and one log line naming it and why. A supervisor restarts it, and the journal and
ledger make the restart lossless. The embedded broker is not restarted in place: it is
memory-only, so a new one is empty, and the processor and the sequencer handle an emptied
broker only when they start. Between the failure and the exit every endpoint that needs the
broker answers 503 at once. An external Kafka is not watched as a process: its clients
reconnect through a blip, and a request that cannot be produced in the meantime fails after
``kafka_request_timeout_ms`` (503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ledger.config import Settings
from ledger.core.keys import KeyRing
from ledger.datadir import DataDir, init_data_dir, require_initialized
from ledger.errors import Unavailable
from ledger.http_server import HttpServer
from ledger.init_keys import InitReport
from ledger.kafka.broker import EmbeddedBroker
from ledger.kafka.clients import client_options
from ledger.kafka.topics import Topics, ensure_topics
from ledger.log.cosigning import Cosigner, WitnessEndpoint, parse_witness_endpoints
from ledger.log.governance import GovernanceFollower, follow_ledger
from ledger.log.ledger_dir import VKEY_NAME, read_vkey
from ledger.log.store import LedgerStore
from ledger.sdk.client import Client
from ledger.server.api import make_api
from ledger.server.auth import ApiAuth
from ledger.server.backend import ServiceBackend, unless_stopping
from ledger.server.children import Child, child_env
from ledger.server.heartbeat import beat
from ledger.server.metrics import Metrics, serve_metrics
from ledger.server.sequencer_process import relay_metrics
from ledger.server.sequencing import follow_governance, open_sequencer
from ledger.server.tokens import TOKENS_FILE, load_tokens
from ledger.server.watch import broker_exit, watch
from ledger.server.webhook import ApprovalWebhook
from ledger.telemetry import instrument_api

log = logging.getLogger("govledger.service")

COMPONENTS = ("processor", "sequencer", "api", "monitor")
CHILD_GRACE_AFTER_FAILURE_S = 2.0
STOP_GRACE_AFTER_FAILURE_S = 5.0


@dataclass(slots=True)
class Service:
    settings: Settings
    components: tuple[str, ...] = COMPONENTS
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    broker: EmbeddedBroker | None = None
    bootstrap: str = ""
    api_url: str = ""
    init_report: InitReport | None = None
    keyring: KeyRing | None = None
    governance: GovernanceFollower | None = None
    client: Client | None = None
    failed: str | None = None
    failure: str | None = None
    _kafka_log_level: int | None = None
    processor_pid: int | None = None
    sequencer_pid: int | None = None
    monitor_pid: int | None = None
    metrics: Metrics = field(default_factory=Metrics)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stoppers: list[Callable[[], object]] = field(default_factory=list)
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def data(self) -> DataDir:
        return DataDir.of(self.settings)

    @property
    def topics(self) -> Topics:
        return Topics(self.settings.topic_prefix)

    # -- start -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every configured component. Raises ConfigError, Unavailable or ProofError."""
        witnesses = parse_witness_endpoints(self.settings.witnesses)  # bad: before anything
        if {"processor", "sequencer"} <= set(self.components):  # `up`: first start creates
            keys = {"authority_key": self.settings.authority_key_file,
                    "ledger_key": self.settings.ledger_key_file,
                    "operator_key": self.settings.operator_key_file}
            self.init_report = init_data_dir(self.settings.data_dir, self.settings.log_origin,
                                             **keys)
            from processors.genesis import ensure_genesis  # the ledger's first leaves
            ensure_genesis(self.settings.data_dir, self.clock(), **keys)
        else:  # one role of a split deployment: reads only its own key (docs/production.md)
            require_initialized(self.data)
        with LedgerStore(self.data.ledger_db) as store:
            self.governance = follow_ledger(self.settings.data_dir, store)
        self.keyring = self.governance.keyring  # live: kept by the follower of the ledger
        if self.settings.embedded:
            self.broker = EmbeddedBroker(start_timeout_s=self.settings.broker_start_timeout_s)
            await self.broker.astart()
            self._stoppers.append(self.broker.astop)
            self.bootstrap = self.broker.bootstrap
            self._spawn("broker", watch(self.stop_event, broker_exit(self.broker)))
        else:
            assert self.settings.kafka_bootstrap is not None
            self.bootstrap = self.settings.kafka_bootstrap
        await ensure_topics(self.bootstrap, self.topics.all(), self.settings.partitions,
                            self.settings.replication_factor,
                            client_options=client_options(self.settings),
                            single=self.topics.single_partition())
        if "sequencer" in self.components:
            await self._start_sequencer()
            if witnesses:
                self._start_cosigner(witnesses)
        if self.sequencer_pid is not None or "sequencer" not in self.components:
            # the keys in force come from the ledger another process's sequencer writes
            assert self.governance is not None
            self._spawn("governance", follow_governance(self.governance, self.data.ledger_db,
                                                        self.stop_event))
        if "processor" in self.components:
            await self._start_processor()
        if "api" in self.components:
            await self._start_api()
        if "monitor" in self.components and self.settings.monitor:
            await self._start_monitor_process()
        self._start_operations()

    def _start_operations(self) -> None:
        """/metrics for a role without the API; the heartbeat `govledger health` checks."""
        if self.settings.metrics_port is not None and "api" not in self.components:
            self._stoppers.append(serve_metrics(self.metrics, self.settings.api_host,
                                                self.settings.metrics_port))
        if self.settings.heartbeat_file is not None:
            tasks = list(self._tasks)  # the components; the heartbeat is not one
            self._spawn("heartbeat", beat(
                self.settings.heartbeat_file,
                lambda: not self.stop_event.is_set() and not any(t.done() for t in tasks),
                self.stop_event, time.time))

    async def _start_sequencer(self) -> None:
        if self.settings.sequencer_own_process and len(self.components) > 1:
            await self._start_sequencer_process()
            return
        assert self.governance is not None
        worker = await open_sequencer(self.settings, self.bootstrap, self.topics,
                                      self.governance, self.data.ledger_key, self.metrics)
        self._stoppers.append(worker.close)
        await worker.start()
        self._spawn("sequencer", worker.run(self.stop_event))

    async def _start_sequencer_process(self) -> None:
        """The sequencer in a child process (ledger/server/sequencer_process.py): a core of
        its own instead of this event loop and GIL, shared with the API. Its metrics arrive
        as lines on its stdout, relayed into this process's /metrics; it dies with this
        process, and this service stops if it dies. It verifies the ledger against its
        checkpoint before it is ready: a ledger that does not is its exit status 1, raised
        here as ProofError."""
        child = Child("sequencer", "ledger.server.sequencer_process", self.settings.data_dir)
        self.sequencer_pid = await child.start(child_env(self.settings, self.bootstrap),
                                               stdout=asyncio.subprocess.PIPE)
        # Read until the child's stdout closes, i.e. until it exited (also after our stop
        # event: a child blocked on a full pipe would not stop in its grace).
        relay = asyncio.create_task(relay_metrics(child.stdout, self.metrics,
                                                  frozenset(self.topics.all())),
                                    name="sequencer metrics")
        # A relay that stops on an error would leave the child blocked on a full pipe,
        # appending nothing while it looks alive: that stops the service.
        self._watch("sequencer metrics", relay)

        async def stop_child() -> None:
            # It stops after the processor (registered before it): what the processor
            # publishes on its way out is still sequenced.
            try:
                await child.stop(20 if self.failed is None else CHILD_GRACE_AFTER_FAILURE_S)
            finally:  # also when this stop is cut short (the child is dead either way)
                # Its stdout closes as it exits: the relay reads to the end, so the pipe is
                # closed with it and no transport is left open.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(relay, 5)
        self._stoppers.append(stop_child)
        await child.wait_ready(120)  # the ledger verified, connected (or failed)
        self._spawn("sequencer", watch(self.stop_event, child.exited()))

    def _start_cosigner(self, witnesses: tuple[WitnessEndpoint, ...]) -> None:
        """Ask the configured witnesses to cosign each checkpoint: a task of its own, off
        the append path (ledger/log/cosigning.py)."""
        cosigner = Cosigner(self.settings.data_dir, witnesses,
                            interval_s=self.settings.checkpoint_interval_s)
        self._stoppers.append(cosigner.close)
        self._spawn("cosigner", cosigner.run(self.stop_event))

    async def _start_processor(self) -> None:
        if self.settings.processor_own_process and len(self.components) > 1:
            await self._start_processor_process()
            return
        from processors.app import build_worker  # the decision side is optional per process
        worker = build_worker(self.settings, self.bootstrap)
        await worker.start()

        async def stop_worker() -> None:
            await worker.stop()
            worker.journal.close()
        self._stoppers.append(stop_worker)
        self._spawn("processor", worker.run(self.stop_event))

    async def _start_processor_process(self) -> None:
        """The decision worker in a child process (``govledger processor``): it gets a core
        of its own instead of sharing this event loop with the API and the sequencer. The
        child dies with this process (PR_SET_PDEATHSIG), and this service stops if it dies."""
        child = Child("processor", "processors", self.settings.data_dir)
        self.processor_pid = await child.start(child_env(self.settings, self.bootstrap, {
            "GOVLEDGER_PROCESSOR_GROUP": str(self.settings.use_processor_group).lower()}))
        # A clean stop lets the child finish its batch and publications. After a failure
        # (the broker is gone) it cannot publish anything: its journal is durable before any
        # publication, so it is killed after a short grace rather than left waiting on
        # Kafka's request timeout. Registered before the wait: a start cut short stops it.
        self._stoppers.append(lambda: child.stop(
            20 if self.failed is None else CHILD_GRACE_AFTER_FAILURE_S))
        await child.wait_ready(120)  # restored and connected (or failed)
        self._spawn("processor", watch(self.stop_event, child.exited()))

    async def _start_monitor_process(self) -> None:
        """The governance monitor (``python -m processors.monitor``, a faust app) in a child
        process, off the decision path: not awaited for readiness (it rebuilds from the
        ledger, then joins its consumer group), but watched like every component. Its ready
        file is ``.monitor-ready-<pid>`` in the data directory."""
        child = Child("monitor", "processors.monitor", self.settings.data_dir)
        self.monitor_pid = await child.start(child_env(self.settings, self.bootstrap))
        # Nothing durable in it (the ledger is its state); started last, stopped first. After
        # a failure the whole stop is bounded (STOP_GRACE_AFTER_FAILURE_S): its grace too.
        self._stoppers.append(lambda: child.stop(
            CHILD_GRACE_AFTER_FAILURE_S * 5 if self.failed is None
            else CHILD_GRACE_AFTER_FAILURE_S))
        self._spawn("monitor", watch(self.stop_event, child.exited()))

    async def _start_api(self) -> None:
        assert self.keyring is not None
        self.client = Client(self.settings, self.bootstrap, self.keyring, clock=self.clock)
        await self.client.start(from_beginning=True)
        governance = self.governance
        backend = ServiceBackend(self.settings, self.keyring, self.client, self, self.metrics,
                                 self.clock, lambda: governance.state.position if governance
                                 else 0)
        self._stoppers.append(self.client.stop)
        self._spawn("decisions", watch(self.stop_event, self.client.reader_stopped()))
        if self.settings.approval_webhook:
            hook = ApprovalWebhook(self.settings.approval_webhook, self.clock)
            self.client.on_pending.append(hook.notify)
            self._spawn("approval webhook", watch(self.stop_event, hook.run()))
        # The keyring as the backend holds it now, on every request: the live (governance)
        # keyring the ledger's governance follower keeps is what authenticates callers.
        auth = ApiAuth(lambda: backend.keyring,
                       load_tokens(self.settings.data_dir / TOKENS_FILE), clock=self.clock)
        app = make_api(backend, self.metrics, auth=auth)
        instrument_api(app)  # server spans, when tracing is configured
        server = HttpServer(app, self.settings.api_host, self.settings.api_port)
        self._stoppers.append(server.stop)  # before the start: a start cut short stops it
        self.api_url = await server.start()
        self._spawn("api", watch(self.stop_event, server.served()))

    def _spawn(self, name: str, work: Coroutine[object, object, None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except Exception as exc:
                self._fail(name, exc)
                raise
        self._tasks.append(asyncio.create_task(guarded(), name=name))

    def _watch(self, name: str, task: asyncio.Task[None]) -> None:
        """Stop the service if ``task`` (awaited by a stopper, not in ``_tasks``) fails."""
        def ended(done: asyncio.Task[None]) -> None:
            if not done.cancelled() and isinstance(error := done.exception(), Exception):
                self._fail(name, error)
        task.add_done_callback(ended)

    def _fail(self, name: str, exc: Exception) -> None:
        """Record the first failure, log it once, and stop the service."""
        if self.failed is not None:  # a consequence of the first failure
            log.info("%s stopped too: %s", name, exc)
            return
        self.failed, self.failure = name, f"{name} failed: {exc}"
        # One line naming the component; a traceback only for what no component expects.
        log.error("%s; stopping the service (exit 3)", self.failure,
                  exc_info=not isinstance(exc, Unavailable))
        # The Kafka clients retry a dead broker every ~100 ms until they are stopped; the
        # failure is logged above, their repetition of it would only flood the log.
        self._kafka_log_level = logging.getLogger("aiokafka").level
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        self.stop_event.set()

    # -- run / stop --------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop_event.set)

    async def wait(self) -> None:
        await self.stop_event.wait()

    async def stop(self) -> None:
        """Stop every component, in reverse order. After a failure each step is bounded: a
        client waiting on a dead broker (a producer flushing, a consumer fetching) would
        otherwise hold the exit for Kafka's request timeout; what is abandoned is in the
        state a crash leaves, which the journal and the ledger recover from."""
        self.stop_event.set()
        loop = asyncio.get_running_loop()
        deadline = None if self.failed is None else loop.time() + STOP_GRACE_AFTER_FAILURE_S

        def bound() -> float | None:
            return None if deadline is None else max(deadline - loop.time(), 0.5)
        for task in self._tasks:
            with contextlib.suppress(Exception):
                await self._bounded(task, bound(), task.get_name())
        for stopper in reversed(self._stoppers):
            try:
                result = stopper()
                if asyncio.iscoroutine(result):
                    name = getattr(stopper, "__qualname__", "a stopper")
                    await self._bounded(result, bound(), name)
            except Exception:
                log.exception("error while stopping")
        self._stoppers.clear()
        if self._kafka_log_level is not None:  # every client is stopped: nothing floods now
            logging.getLogger("aiokafka").setLevel(self._kafka_log_level)

    @staticmethod
    async def _bounded(work: Awaitable[object], seconds: float | None, what: str) -> None:
        if seconds is None:
            await work
            return
        try:
            await asyncio.wait_for(work, seconds)
        except TimeoutError:
            log.warning("%s did not stop within %.1f s after the failure: abandoned", what,
                        seconds)

    def describe(self) -> dict[str, object]:
        """What start-up prints: addresses, data directory, ledger origin and vkey."""
        info: dict[str, object] = {
            "data_dir": str(self.settings.data_dir.resolve()),
            "kafka": self.bootstrap, "embedded_broker": self.broker is not None,
            "components": list(self.components), "topics": list(self.topics.all()),
            "origin": self.settings.log_origin,
        }
        if self.api_url:
            info["api"] = self.api_url
        vkey_path = self.settings.data_dir / VKEY_NAME
        if vkey_path.exists():
            info["vkey"] = read_vkey(self.settings.data_dir)
            info["origin"] = str(info["vkey"]).split("+", 1)[0]  # the ledger's, not the setting
        if self.init_report is not None and self.init_report.created:
            info["created"] = self.init_report.created
        return info

    def running(self, component: str) -> bool:
        """False once the named component's task has ended (the backend's readiness)."""
        return not any(t.get_name() == component and t.done() for t in self._tasks)


async def run_service(settings: Settings, components: Iterable[str] = COMPONENTS,
                      on_ready: Callable[[Service], None] | None = None) -> int:
    """Run until SIGINT/SIGTERM; return the exit code (0 clean, 3 a component failed)."""
    service = Service(settings, tuple(components))
    service.install_signal_handlers()
    try:
        # A component dying (or SIGTERM) during start cuts the start short.
        await unless_stopping(service, service.start())
        if on_ready is not None:
            on_ready(service)
        await service.wait()
    except Unavailable:
        if service.failed is None and not service.stop_event.is_set():
            raise  # the start itself failed: the CLI reports it (exit 3)
    finally:
        await service.stop()
    return 0 if service.failed is None else 3
