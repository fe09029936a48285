"""Connection settings of the control-plane CLI (``dataflow pipeline|model ...``).

Sources, as the seldon CLI resolves them (first one that gives a value wins):

* scheduler address: ``--scheduler-host`` given explicitly > config file ``controlplane.schedulerHost``
  > env ``SELDON_SCHEDULE_HOST`` > ``0.0.0.0:9004``;
* Kafka bootstrap: ``--kafka-broker`` given explicitly > config file ``kafka.bootstrap`` > the
  ``bootstrap.servers`` of the Kafka config file > env ``SELDON_KAFKA_BROKER`` > ``0.0.0.0:9092``;
* Kafka config file (JSON: ``bootstrap.servers``, ``topicPrefix``, ``consumer: {librdkafka keys}``):
  ``--kafka-config-path`` > env ``SELDON_KAFKA_CONFIG_PATH``;
* namespace: ``--namespace`` > env ``POD_NAMESPACE`` > config file ``kafka.namespace`` > ``default``;
* topic prefix: config file ``kafka.topicPrefix`` > Kafka config file ``topicPrefix`` > ``seldon``.

The config file is ``~/.config/dataflow/cli/config.json`` (env ``DATAFLOW_CLI_CONFIG`` points
elsewhere), in the seldon CLI's format::

    {"controlplane": {"schedulerHost": "127.0.0.1:9004"},
     "kafka": {"bootstrap": "127.0.0.1:9092", "namespace": "default", "topicPrefix": "seldon"},
     "dataplane": {"inferHost": "127.0.0.1:9000"}}

When neither exists, the seldon CLI's own configuration is read, so a machine already set up
for ``seldon`` needs no second file: the config its ``~/.config/seldon/cli/configs.json`` marks
active (``{"configs": {"NAME": "PATH"}, "active": "NAME"}``, written by ``seldon config add`` /
``activate``), else ``~/.config/seldon/cli/config.json``. ``DATAFLOW_CLI_CONFIG`` set means
exactly that file (absent = no config), never the seldon CLI's.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from dataflow_cli import CliError

ENV_SCHEDULER = "SELDON_SCHEDULE_HOST"
ENV_KAFKA = "SELDON_KAFKA_BROKER"
ENV_KAFKA_CONFIG = "SELDON_KAFKA_CONFIG_PATH"
ENV_NAMESPACE = "POD_NAMESPACE"
ENV_CLI_CONFIG = "DATAFLOW_CLI_CONFIG"
DEFAULT_SCHEDULER = "0.0.0.0:9004"
DEFAULT_KAFKA = "0.0.0.0:9092"
DEFAULT_NAMESPACE = "default"
DEFAULT_PREFIX = "seldon"


SELDON_CLI_DIR = os.path.join(".config", "seldon", "cli")  # under the home directory


def config_path() -> str:
    return os.environ.get(ENV_CLI_CONFIG) or os.path.join(os.path.expanduser("~"), ".config", "dataflow", "cli",
                                                          "config.json")


def seldon_cli_config_path() -> str | None:
    """The seldon CLI's active config file, if it has one on this machine."""
    base = os.path.join(os.path.expanduser("~"), SELDON_CLI_DIR)
    configs = os.path.join(base, "configs.json")
    if os.path.exists(configs):
        data = _json_object(configs, "seldon CLI configs", f"cannot read seldon CLI configs {configs}")
        named, active = data.get("configs"), data.get("active")
        if isinstance(named, dict) and isinstance(active, str) and isinstance(named.get(active), str):
            return os.path.expanduser(named[active])
    default = os.path.join(base, "config.json")
    return default if os.path.exists(default) else None


def _json_object(path: str, what: str, unreadable: str) -> dict:
    """The JSON object in ``path``; unreadable or not an object -> ``CliError`` naming the file."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise CliError(f"{unreadable}: {exc}") from exc
    if not isinstance(data, dict):
        raise CliError(f"{what} {path} must hold a JSON object")
    return data


def load_cli_config(path: str | None = None) -> dict:
    """The CLI config file as a dict ({} if absent); a malformed file is a ``CliError``."""
    if path is None and not os.environ.get(ENV_CLI_CONFIG) and not os.path.exists(config_path()):
        path = seldon_cli_config_path()
        if path is None:
            return {}
    path = path or config_path()
    if not os.path.exists(path):
        return {}
    return _json_object(path, "CLI config", f"cannot read CLI config {path}")


def _section(cfg: dict, name: str) -> dict:
    value = cfg.get(name)
    return value if isinstance(value, dict) else {}


def load_kafka_config(path: str | None) -> dict:
    """The Kafka config file given by ``--kafka-config-path`` ({} if none); malformed -> ``CliError``."""
    if not path:
        return {}
    return _json_object(path, "Kafka config", f"Failed to load Kafka config from {path}")


def add_scheduler_flags(p) -> None:
    p.add_argument("--scheduler-host", default=None,
                   help=f"scheduler address HOST:PORT (env {ENV_SCHEDULER}, default {DEFAULT_SCHEDULER})")


def add_kafka_flags(p) -> None:
    p.add_argument("--kafka-broker", default=None,
                   help=f"Kafka bootstrap servers (env {ENV_KAFKA}, default {DEFAULT_KAFKA})")
    p.add_argument("--kafka-config-path", default=None,
                   help=f"path to a Kafka config JSON file (env {ENV_KAFKA_CONFIG})")
    p.add_argument("--namespace", default=None,
                   help=f"namespace part of topic names (env {ENV_NAMESPACE}, default {DEFAULT_NAMESPACE})")


@dataclass
class Connection:
    scheduler_host: str = DEFAULT_SCHEDULER
    kafka_broker: str = DEFAULT_KAFKA
    namespace: str = DEFAULT_NAMESPACE
    topic_prefix: str = DEFAULT_PREFIX
    kafka_consumer: dict = field(default_factory=dict)


def resolve(args) -> Connection:
    """Connection settings from parsed ``args`` (missing attributes count as not given)."""
    cfg = load_cli_config()
    control, kafka = _section(cfg, "controlplane"), _section(cfg, "kafka")
    kcfg = load_kafka_config(getattr(args, "kafka_config_path", None) or os.environ.get(ENV_KAFKA_CONFIG))
    scheduler = (getattr(args, "scheduler_host", None) or control.get("schedulerHost")
                 or os.environ.get(ENV_SCHEDULER) or DEFAULT_SCHEDULER)
    broker = (getattr(args, "kafka_broker", None) or kafka.get("bootstrap") or kcfg.get("bootstrap.servers")
              or os.environ.get(ENV_KAFKA) or DEFAULT_KAFKA)
    namespace = (getattr(args, "namespace", None) or os.environ.get(ENV_NAMESPACE) or kafka.get("namespace")
                 or DEFAULT_NAMESPACE)
    prefix = kafka.get("topicPrefix") or kcfg.get("topicPrefix") or DEFAULT_PREFIX
    raw_consumer = kcfg.get("consumer")
    consumer = raw_consumer if isinstance(raw_consumer, dict) else {}
    return Connection(scheduler_host=str(scheduler), kafka_broker=str(broker), namespace=str(namespace),
                      topic_prefix=str(prefix), kafka_consumer={str(k): v for k, v in consumer.items()})
