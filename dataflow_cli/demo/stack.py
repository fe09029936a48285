"""The whole demo stack on loopback: broker, MLServer, scheduler, engine and both gateways.

Start order (each waits for the previous to be ready): embedded broker -> MLServer with the
sample models -> scheduler -> dataflow engine -> model gateway; then the sample models and
pipelines are loaded through the scheduler's gRPC API and every pipeline must reach
PipelineReady; then the pipeline gateway starts, must report each pipeline ready, and a probe
request must come back through it. ``stop()``
stops the children in reverse order. Every component is a child process (see ``children``),
logging to ``<state-dir>/logs/<name>.log``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from chainer_api import scheduler_pb2, scheduler_pb2_grpc
from dataflow.broker import free_port
from dataflow.kafka import TopicNamer
from dataflow.seldon_env import kubernetes_namespace
from dataflow_cli.demo.children import ChildFailed, ChildProcess
from gateways.mlserver_process import MLServerError, MLServerProcess
from scheduler_min.manifest import models_from_yaml, pipelines_from_yaml
from scheduler_min.models import ENDPOINT_PARAMETER
from scheduler_min.validation import PipelineValidationError, check_topic_names

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples"
DEFAULT_MODELS_FILE = EXAMPLES / "models.yaml"
DEFAULT_PIPELINES = [EXAMPLES / "pipelines" / "tfsimples.yaml"]

# The probe sent through the pipeline gateway once tfsimples is Ready. tfsimple1 gives (a+b, a-b)
# and tfsimple2 of that gives (2a, 2b).
PROBE_PIPELINE = "tfsimples"
PROBE_A = list(range(1, 17))
PROBE_B = [1] * 16
PROBE_REQUEST = {"inputs": [
    {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": PROBE_A},
    {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": PROBE_B},
]}
PROBE_EXPECTED = {"OUTPUT0": [2 * a for a in PROBE_A], "OUTPUT1": [2 * b for b in PROBE_B]}


class StackInterrupted(Exception):
    """A stop was requested (a signal, ``Stack.request_stop``): unwinds start-up or the watch loop."""


class StackError(RuntimeError):
    """The stack could not be started; the message says which part and why."""


@dataclass
class UpOptions:
    """Ports: 0 picks a free one. ``state_dir`` None = a temporary folder removed on stop."""

    host: str = "127.0.0.1"
    kafka_port: int = 9092
    scheduler_port: int = 9004
    chainer_port: int = 9008
    http_port: int = 9010
    grpc_port: int = 9011
    mlserver_http_port: int = 9501
    mlserver_grpc_port: int = 9500
    metrics_port: int = 9006
    models: bool = True
    models_dir: Path | None = None
    models_file: Path = DEFAULT_MODELS_FILE
    pipelines: list[Path] = field(default_factory=lambda: list(DEFAULT_PIPELINES))
    state_dir: Path | None = None
    partitions: int = 1
    engines: int = 1                   # dataflow engine replicas; each runs every pipeline version
    runtime: str | None = None
    ready_timeout: float = 180.0
    log_level: str = "INFO"


def _port(value: int, host: str) -> int:
    return value or free_port(host)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


class Stack:
    """Start with ``start()``; ``stop()`` is idempotent and safe after a failed start."""

    def __init__(self, options: UpOptions, out=sys.stdout):
        self.opt = options
        self.out = out
        host = options.host
        self.kafka_port = _port(options.kafka_port, host)
        self.scheduler_port = _port(options.scheduler_port, host)
        self.chainer_port = _port(options.chainer_port, host)
        self.http_port = _port(options.http_port, host)
        self.grpc_port = _port(options.grpc_port, host)
        self.mlserver_http_port = _port(options.mlserver_http_port, host)
        self.mlserver_grpc_port = _port(options.mlserver_grpc_port, host)
        self.metrics_port = _port(options.metrics_port, host)
        self._own_state_dir = options.state_dir is None
        self.state_dir = Path(options.state_dir or tempfile.mkdtemp(prefix="dataflow-up-"))
        self.children: list = []  # ChildProcess or MLServerProcess, in start order
        self.stop_requested: str | None = None  # why to stop (a signal name), see request_stop
        self.mlserver: MLServerProcess | None = None
        self.loaded_pipelines: list[str] = []
        self.model_manifests: list = []
        self.pipeline_manifests: list = []  # (path, scheduler_pb2.Pipeline)
        self._stopped_replicas: set[str] = set()
        self.engine_metrics: list[str] = []     # HOST:PORT of each engine's health port (/metrics)
        self.model_gateway_metrics: str | None = None

    # Addresses -------------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return f"{self.opt.host}:{self.kafka_port}"

    @property
    def scheduler_address(self) -> str:
        return f"{self.opt.host}:{self.scheduler_port}"

    @property
    def chainer_address(self) -> str:
        return f"{self.opt.host}:{self.chainer_port}"

    @property
    def inference_url(self) -> str:
        return f"http://{self.opt.host}:{self.http_port}"

    @property
    def inference_grpc(self) -> str:
        return f"{self.opt.host}:{self.grpc_port}"

    # Lifecycle -------------------------------------------------------------------------------
    def start(self) -> Stack:
        self._parse_manifests()  # bad YAML fails before anything starts
        self._check_ports_free()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        stages = [self._start_broker, *([self._start_mlserver] if self.opt.models else []),
                  self._start_scheduler, self._start_engine, self._start_model_gateway,
                  self._load_models, self._load_pipelines, self._wait_pipelines_ready,
                  # The pipeline gateway starts once the pipelines' topics exist: a consumer that
                  # subscribes to a topic before it is created may not see it for minutes.
                  self._start_pipeline_gateway, self._wait_gateway_ready, self._probe]
        try:
            for stage in stages:
                self.raise_if_stop_requested()
                stage()
        except ChildFailed as exc:
            raise StackError(str(exc)) from exc
        return self

    def request_stop(self, reason: str) -> None:
        """Ask a starting stack to stop before its next stage. A signal handler's exception alone
        is not enough: one that lands while a child is being forked (inside the logging module's
        fork hooks) is swallowed by the interpreter, and start-up would carry on to the end."""
        self.stop_requested = reason

    def raise_if_stop_requested(self) -> None:
        if self.stop_requested is not None:
            raise StackInterrupted(self.stop_requested)

    def stop(self, timeout: float = 10.0) -> None:
        while self.children:
            child = self.children.pop()
            name = getattr(child, "name", "mlserver")
            self._say(f"stopping {name}")
            try:
                child.stop(timeout=timeout)
            except Exception as exc:  # keep stopping the rest
                self._say(f"could not stop {name} cleanly: {exc}")
        if self._own_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def failed_child(self):
        """The first child that is no longer running, or None. An engine replica that stops while
        another still runs is not a failure: its partitions move to the others (said once)."""
        engines = [c for c in self.children if getattr(c, "name", None) in self.engine_names()]
        engines_alive = any(c.alive() for c in engines)
        for child in self.children:
            if child.alive():
                continue
            if child in engines and engines_alive:
                if child.name not in self._stopped_replicas:
                    self._stopped_replicas.add(child.name)
                    self._say(f"{child.name} stopped; its partitions move to the other engine replicas")
                continue
            return child
        return None

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # Components ------------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _dataflow(self, name: str, command: str, args: list[str]) -> ChildProcess:
        argv = [sys.executable, "-m", "dataflow_cli", "--log-level", self.opt.log_level, command]
        child = ChildProcess(name, argv + args, self.state_dir / "logs" / f"{name}.log",
                             cwd=str(REPO_ROOT))
        child.start()
        self.children.append(child)
        self._say(f"started {name} (pid {child.pid}): {' '.join(argv[2:] + args)}")
        return child

    def _start_broker(self) -> None:
        child = self._dataflow("broker", "broker", ["--port", str(self.kafka_port),
                                                     "--host", self.opt.host])
        child.wait_until(lambda: port_open(self.opt.host, self.kafka_port), 30,
                         f"accepting connections on {self.bootstrap}")

    def _start_mlserver(self) -> None:
        self.mlserver = MLServerProcess(self.opt.models_dir, http_port=self.mlserver_http_port,
                                        grpc_port=self.mlserver_grpc_port, host=self.opt.host,
                                        log_path=self.state_dir / "logs" / "mlserver.log")
        try:
            self.mlserver.start(timeout=self.opt.ready_timeout)
        except MLServerError as exc:
            raise StackError(f"mlserver: {exc}") from exc
        self.mlserver.name = "mlserver"  # type: ignore[attr-defined]  # the label stop() reports, as ChildProcess has
        self.children.append(self.mlserver)
        self._say(f"started mlserver (pid {self.mlserver.pid}): {len(self.mlserver.models)} models "
                  f"ready on {self.mlserver.http_url} and {self.mlserver.grpc_url}")

    def _start_scheduler(self) -> None:
        args = ["--port", str(self.scheduler_port), "--chainer-port", str(self.chainer_port),
                "--host", self.opt.host, "--state-dir", str(self.state_dir / "scheduler")]
        if self.mlserver is not None:
            args += ["--default-model-endpoint", self.mlserver.grpc_url]
        if self.opt.engines > 1:  # every engine gets every version: they share its consumer group
            args += ["--max-shard-count-multiplier", str(self.opt.engines)]
        child = self._dataflow("scheduler", "scheduler", args)
        child.wait_until(lambda: port_open(self.opt.host, self.scheduler_port)
                         and port_open(self.opt.host, self.chainer_port), 60,
                         f"listening on {self.scheduler_address} and {self.chainer_address}")

    def engine_names(self) -> list[str]:
        """Child (and replica) names of the engines: ``engine`` alone, else ``engine-1`` ... ``engine-N``."""
        n = self.opt.engines
        return ["engine"] if n == 1 else [f"engine-{i}" for i in range(1, n + 1)]

    def _start_engine(self) -> None:
        for name in self.engine_names():
            args = ["--scheduler", self.chainer_address, "--kafka", self.bootstrap]
            extra = {"--name": f"dataflow-up-{name}", "--partitions": str(self.opt.partitions),
                     "--state-dir": str(self.state_dir / "engine"), "--runtime": self.opt.runtime}
            args += [x for opt, value in extra.items() if value for x in (opt, value)]
            health = free_port(self.opt.host)
            args += ["--health-port", str(health)]
            self.engine_metrics.append(f"{self.opt.host}:{health}")
            child = self._dataflow(name, "engine", args)
            child.wait_until(lambda: http_status(f"http://{self.opt.host}:{health}/live") == 200,  # noqa: B023  # called within this iteration
                             60, "live")

    def _start_model_gateway(self) -> None:
        metrics_port = free_port(self.opt.host)
        self.model_gateway_metrics = f"{self.opt.host}:{metrics_port}"
        args = ["--scheduler", self.scheduler_address, "--kafka", self.bootstrap,
                "--partitions", str(self.opt.partitions), "--metrics-port", str(metrics_port)]
        self._dataflow("model-gateway", "model-gateway", args)

    def _start_pipeline_gateway(self) -> None:
        args = ["--scheduler", self.scheduler_address, "--kafka", self.bootstrap,
                "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
                "--host", self.opt.host, "--partitions", str(self.opt.partitions),
                "--metrics-port", str(self.metrics_port)]
        child = self._dataflow("pipeline-gateway", "pipeline-gateway", args)
        child.wait_until(lambda: http_status(f"{self.inference_url}/ready") == 200, 60,
                         f"serving {self.inference_url}/ready")

    # Loading ---------------------------------------------------------------------------------
    def _scheduler_stub(self):
        channel = grpc.insecure_channel(self.scheduler_address)
        return channel, scheduler_pb2_grpc.SchedulerStub(channel)

    def _check_ports_free(self) -> None:
        """A port already taken would make a readiness check talk to someone else's server."""
        wanted = [("--kafka-port", self.kafka_port), ("--scheduler-port", self.scheduler_port),
                  ("--chainer-port", self.chainer_port), ("--http-port", self.http_port),
                  ("--grpc-port", self.grpc_port), ("--metrics-port", self.metrics_port)]
        if self.opt.models:
            wanted += [("--mlserver-http-port", self.mlserver_http_port),
                       ("--mlserver-grpc-port", self.mlserver_grpc_port)]
        seen: dict[int, str] = {}
        for flag, port in wanted:
            if port in seen:
                raise StackError(f"{flag} {port} is also given to {seen[port]}")
            seen[port] = flag
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((self.opt.host, port))
                except OSError as exc:
                    raise StackError(f"port {port} ({flag}) on {self.opt.host} is not available "
                                     f"({exc.strerror}); is another stack running? Pass "
                                     f"{flag} 0 to pick a free port") from exc

    def _parse_manifests(self) -> None:
        def parse(path: Path, reader):
            try:
                data = Path(path).read_bytes()  # decoded by the parser, which names the file on failure
            except OSError as exc:
                raise StackError(f"cannot read {path}: {exc.strerror or exc}") from exc
            try:
                return reader(data, str(path))
            except ValueError as exc:
                message = str(exc)
                raise StackError(message if str(path) in message else f"{path}: {message}") from exc

        if self.opt.models:
            self.model_manifests = parse(self.opt.models_file, models_from_yaml)
        self.pipeline_manifests = [(path, pipeline) for path in self.opt.pipelines
                                   for pipeline in parse(path, pipelines_from_yaml)]
        self._check_topic_names()

    def _check_topic_names(self) -> None:
        """Names whose topics Kafka would refuse fail here, before anything starts, with the topic
        naming the scheduler started below will use (no prefix or namespace flags are passed to it)."""
        namer = TopicNamer(namespace=kubernetes_namespace() or "default")
        try:
            for model in self.model_manifests:
                where = self.opt.models_file
                check_topic_names(namer, model=model.meta.name)
            for where, pipeline in self.pipeline_manifests:  # noqa: B007  # read by the except clause below
                check_topic_names(namer, pipeline=pipeline.name, steps=[s.name for s in pipeline.steps])
        except PipelineValidationError as exc:
            raise StackError(f"{where}: {exc}") from exc

    def _load_models(self) -> None:
        if not self.opt.models or self.mlserver is None:
            return

        models = self.model_manifests
        channel, stub = self._scheduler_stub()
        with channel:
            for model in models:
                # Point every sample model at the MLServer we started.
                params = [p for p in model.modelSpec.parameters if p.name != ENDPOINT_PARAMETER]
                del model.modelSpec.parameters[:]
                model.modelSpec.parameters.extend(params)
                model.modelSpec.parameters.add(name=ENDPOINT_PARAMETER, value=self.mlserver.grpc_url)
                try:
                    stub.LoadModel(scheduler_pb2.LoadModelRequest(model=model), timeout=10)
                except grpc.RpcError as exc:
                    raise StackError(f"loading model {model.meta.name} failed: "
                                     f"{exc.code().name} {exc.details()}") from exc
        self._say(f"loaded {len(models)} models from {self.opt.models_file} "
                  f"(endpoint {self.mlserver.grpc_url})")

    def _load_pipelines(self) -> None:
        channel, stub = self._scheduler_stub()
        with channel:
            for path, pipeline in self.pipeline_manifests:
                try:
                    stub.LoadPipeline(scheduler_pb2.LoadPipelineRequest(pipeline=pipeline),
                                      timeout=10)
                except grpc.RpcError as exc:
                    raise StackError(f"loading pipeline {pipeline.name} from {path} failed: "
                                     f"{exc.code().name} {exc.details()}") from exc
                self.loaded_pipelines.append(pipeline.name)
        if self.loaded_pipelines:
            self._say(f"loaded pipelines: {', '.join(self.loaded_pipelines)}")

    def pipeline_states(self) -> dict[str, tuple[str, str]]:
        """Pipeline name -> (status name, reason) of its latest version."""
        states: dict[str, tuple[str, str]] = {}
        channel, stub = self._scheduler_stub()
        with channel:
            request = scheduler_pb2.PipelineStatusRequest(subscriberName="dataflow-up")
            for response in stub.PipelineStatus(request, timeout=5):
                if response.versions:
                    state = response.versions[-1].state
                    states[response.pipelineName] = (
                        scheduler_pb2.PipelineVersionState.PipelineStatus.Name(state.status),
                        state.reason)
        return states

    def _wait_pipelines_ready(self) -> None:
        if not self.loaded_pipelines:
            return
        deadline = time.monotonic() + self.opt.ready_timeout
        states: dict = {}
        while True:
            self._check_children()
            try:
                states = self.pipeline_states()
            except grpc.RpcError:
                states = {}
            waiting = [p for p in self.loaded_pipelines
                       if states.get(p, ("",))[0] != "PipelineReady"]
            failed = [f"{p}: {states[p][1]}" for p in waiting
                      if states.get(p, ("",))[0] == "PipelineFailed"]
            if failed:
                raise StackError(f"pipeline failed: {'; '.join(failed)} "
                                 f"(logs in {self.state_dir / 'logs'})")
            if not waiting:
                self._say(f"pipelines ready: {', '.join(self.loaded_pipelines)}")
                return
            if time.monotonic() > deadline:
                detail = "; ".join(f"{p}: {states.get(p, ('unknown', ''))[0]} "
                                   f"{states.get(p, ('', ''))[1]}".strip() for p in waiting)
                raise StackError(f"pipelines not ready within {self.opt.ready_timeout:g}s: "
                                 f"{detail} (logs in {self.state_dir / 'logs'})")
            time.sleep(0.5)

    def _wait_gateway_ready(self) -> None:
        """The pipeline gateway reports every loaded pipeline ready (its output consumer is assigned)."""
        if not self.loaded_pipelines:
            return
        deadline = time.monotonic() + self.opt.ready_timeout
        while True:
            self._check_children()
            waiting = [p for p in self.loaded_pipelines
                       if http_status(f"{self.inference_url}/v2/pipelines/{p}/ready") != 200]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise StackError(f"pipeline gateway not ready for {', '.join(waiting)} within "
                                 f"{self.opt.ready_timeout:g}s (logs in {self.state_dir / 'logs'})")
            time.sleep(0.5)

    def _check_children(self) -> None:
        dead = self.failed_child()
        if dead is not None:
            name = getattr(dead, "name", "mlserver")
            raise StackError(f"{name} exited unexpectedly; log tail:\n{dead.log_tail()}")

    def _probe(self) -> None:
        """One real request through the pipeline gateway (retried while the path warms up)."""
        if PROBE_PIPELINE not in self.loaded_pipelines:
            return
        deadline = time.monotonic() + self.opt.ready_timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_children()
            try:
                response = infer_rest(self.inference_url, PROBE_PIPELINE, PROBE_REQUEST, timeout=30)
                outputs = {o["name"]: o.get("data") for o in response.get("outputs", [])}
                if all(outputs.get(k) == v for k, v in PROBE_EXPECTED.items()):
                    self._say(f"probe request through {PROBE_PIPELINE} answered correctly")
                    return
                last = f"unexpected response {json.dumps(response)[:500]}"
            except (urllib.error.URLError, OSError, ValueError) as exc:
                last = _describe(exc)
            time.sleep(1)
        raise StackError(f"probe request to pipeline {PROBE_PIPELINE} failed: {last} "
                         f"(logs in {self.state_dir / 'logs'})")

    # Presentation ----------------------------------------------------------------------------
    def banner(self) -> str:
        lines = ["", "dataflow up: the stack is running on loopback",
                 f"  Kafka bootstrap      {self.bootstrap}"]
        if self.mlserver is not None:
            lines.append(f"  MLServer             {self.mlserver.http_url} (gRPC {self.mlserver.grpc_address})")
        lines.append(f"  scheduler            {self.scheduler_address} (chainer {self.chainer_address})")
        lines.append(f"  pipeline gateway     {self.inference_url} (gRPC {self.inference_grpc})")
        lines.append(f"  gateway metrics      http://{self.opt.host}:{self.metrics_port}/metrics")
        for address in self.engine_metrics:
            lines.append(f"  engine metrics       http://{address}/metrics")
        if self.model_gateway_metrics:
            lines.append(f"  model gw metrics     http://{self.model_gateway_metrics}/metrics")
        if self.opt.engines > 1:
            lines.append(f"  dataflow engines     {self.opt.engines} replicas sharing {self.opt.partitions} "
                         f"partition(s) per topic: {', '.join(self.engine_names())}")
        lines.append(f"  logs                 {self.state_dir / 'logs'}")
        if self.loaded_pipelines:
            lines.append(f"  pipelines            {', '.join(self.loaded_pipelines)}")
        if PROBE_PIPELINE in self.loaded_pipelines:
            body = json.dumps(PROBE_REQUEST, separators=(",", ":"))
            standard = (self.scheduler_port, self.kafka_port) == (9004, 9092)
            env = "" if standard else (f"SELDON_SCHEDULE_HOST={self.scheduler_address} "
                                       f"SELDON_KAFKA_BROKER={self.bootstrap} ")
            lines += ["", "Try it:",
                      f"  curl -s {self.inference_url}/v2/models/{PROBE_PIPELINE}/infer "
                      f"-H 'Content-Type: application/json' "
                      f"-H 'seldon-model: {PROBE_PIPELINE}.pipeline' -d '{body}'",
                      f"  dataflow pipeline infer {PROBE_PIPELINE} --inference-host "
                      f"{self.opt.host}:{self.http_port} '{body}'",
                      f"  {env}dataflow pipeline inspect {PROBE_PIPELINE}"]
            lines.append(f"  {env}dataflow pipeline describe {PROBE_PIPELINE} --format mermaid")
            if self.mlserver is not None:
                lines.append(f"  {env}dataflow pipeline load -f "
                             f"{EXAMPLES / 'pipelines' / 'tfsimples-join.yaml'}   "
                             f"# more samples in {EXAMPLES / 'pipelines'}")
        elif self.loaded_pipelines:
            name = self.loaded_pipelines[0]
            lines += ["", "Try it (put your request JSON in place of '<json>'):",
                      f"  curl -s {self.inference_url}/v2/models/{name}/infer "
                      f"-H 'Content-Type: application/json' -H 'seldon-model: {name}.pipeline' "
                      f"-d '<json>'",
                      f"  dataflow pipeline infer {name} --inference-host "
                      f"{self.opt.host}:{self.http_port} '<json>'"]
        if self.engine_metrics:
            lines += ["", "Watch it (per-step rates, lag, waiting joins and batches, errors):",
                      f"  dataflow pipeline top --metrics {','.join(self.engine_metrics)}",
                      f"  Grafana: import {EXAMPLES / 'grafana-dashboard.json'} over a Prometheus scraping "
                      f"the metrics addresses above"]
        lines += ["", "Press Ctrl-C to stop."]
        return "\n".join(lines)


def infer_rest(base_url: str, pipeline: str, body: dict, timeout: float = 30) -> dict:
    """POST an OIP JSON request to a pipeline through the gateway; returns the JSON response."""
    request = urllib.request.Request(
        f"{base_url}/v2/models/{pipeline}/infer", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "seldon-model": f"{pipeline}.pipeline"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        try:
            body = exc.read().decode(errors="replace")[:500]
        except Exception:
            body = ""
        return f"HTTP {exc.code} {body}".strip()
    return str(exc)


def options_from_args(args: argparse.Namespace) -> UpOptions:
    opt = UpOptions(host=args.host, kafka_port=args.kafka_port, scheduler_port=args.scheduler_port,
                    chainer_port=args.chainer_port, http_port=args.http_port,
                    grpc_port=args.grpc_port, mlserver_http_port=args.mlserver_http_port,
                    mlserver_grpc_port=args.mlserver_grpc_port, metrics_port=args.metrics_port,
                    models=not args.no_models,
                    models_dir=Path(args.models_dir) if args.models_dir else None,
                    models_file=Path(args.models_file),
                    state_dir=Path(args.state_dir) if args.state_dir else None,
                    partitions=args.partitions, engines=args.engines, runtime=args.runtime,
                    ready_timeout=args.ready_timeout, log_level=args.component_log_level)
    if args.pipelines is not None:
        opt.pipelines = [Path(p) for p in args.pipelines]
    elif args.no_models:
        opt.pipelines = []  # the sample pipelines need the sample models
    return opt
