"""dataflow-engine: a Python dataflow engine for Seldon Core 2 inference pipelines over Kafka.

The core package, in the order a record meets it:

* ``oip``: Open Inference Protocol messages (tensors, raw/typed contents, REST JSON).
* ``topology``: compiles the scheduler's Chainer ``PipelineUpdateMessage`` into steps; the pure
  step semantics (chains, renames, triggers, joins in ``joins``, batches in ``batching``) are
  functions of (record, time, state) with no Kafka in them.
* ``state``: the state of one (pipeline version, input partition), changed in a checkpoint with
  the offsets and restored from its changelog before that partition's steps run.
* ``runtime``: the data plane. A runner runs one pipeline version on Kafka: it consumes the
  version's source topics, drives the steps, produces the outputs and checkpoints state and
  offsets (``kafka_runtime`` on confluent-kafka, ``faust_runtime`` on faust-streaming, one
  semantics).
* ``engine``: the control plane. The engine process subscribes to the scheduler's Chainer
  service, starts and stops a runner per pipeline version and acknowledges each update.
* ``kafka``, ``kafka_parking``, ``kafka_produce``, ``headers``, ``records``: Kafka settings,
  topic and group naming, and the record type every layer shares.

Layers point one way: ``chainer_api`` <- this package <- ``gateways``, ``scheduler_min`` <-
``dataflow_cli`` (checked by import-linter, see pyproject.toml).
"""
__version__ = "0.1.0"
