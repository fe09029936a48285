"""The minimal Seldon scheduler: pipelines and models in, dataflow engines driven over the Chainer API.

Run it with ``dataflow scheduler --port 9004 --chainer-port 9008 --state-dir DIR`` (see
``dataflow scheduler --help``). Modules, one concern each:

* ``manifest``    Seldon ``Pipeline`` / ``Model`` YAML -> ``scheduler_pb2`` protos (strict fields).
* ``convert``     scheduler ``Pipeline`` -> normalised ``PipelineVersion`` -> Chainer
                  ``PipelineUpdateMessage`` (``creation_message`` / ``deletion_message``).
* ``validation``  the reference's validation rules and messages (``PipelineValidationError``).
* ``models``      how a model names its Open Inference Protocol endpoint (``model_endpoint``).
* ``ids``         xid-like version uids.
* ``store``       pipeline versions + status, models; persisted atomically to ``--state-dir``.
* ``hashring`` / ``conflicts``  sharding over engines and ack -> status aggregation.
* ``chainer_server`` / ``scheduler_server`` / ``health`` / ``server``  the gRPC services and process.
* ``gateway_acks`` Create / Delete to pipeline and model gateways, their acks -> gateway status.
* ``client``      a synchronous Scheduler client for the CLI; ``topic_inspect`` for ``pipeline inspect``.
* ``testing``     ``FakeEngine``: a Chainer subscriber that acks everything (tests, demos).

Contract for other components:

* Engines subscribe to ``seldon.mlops.chainer.Chainer`` on the chainer port with a stable replica
  name and ack each Create/Delete with ``PipelineUpdateEvent`` echoing ``timestamp`` and setting
  ``stream`` to their name; acks with another timestamp or from an engine not addressed are ignored.
* Subscribers of ``SubscribePipelineStatus`` / ``SubscribeModelStatus`` (CLI, operator): the first
  messages are the current state, then one message per change. In pipeline updates ``versions[-1]``
  is always the latest version (an old version's change during an upgrade is followed by the latest).
* Gateways subscribe with ``isPipelineGateway`` / ``isModelGateway`` and get only instructions
  (``operation`` Create / Delete, one version, a ``timestamp``), which they ack with
  ``PipelineStatusEvent`` / ``ModelStatusEvent`` echoing the timestamp and naming themselves in
  ``stream``; the acks become ``pipelineGwStatus`` / ``modelGwState`` (``gateway_acks``).
* A model's endpoint is the ``endpoint`` parameter of ``ModelVersionStatus.modelDefn.modelSpec``
  (always set by the scheduler); ``scheduler_min.models.model_endpoint(model)`` reads it.
"""
