"""Build PipelineUpdateMessages without a scheduler (tests, examples, the CLI).

``step_update`` / ``create_message``: the proto messages field by field. To build one from a
Pipeline resource spec (the YAML users write) the way the scheduler does, use
``scheduler_min.convert.pipeline_message``: that conversion is the scheduler's, a layer above.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import cast

from chainer_api import chainer_pb2
from dataflow.joins.types import JoinType
from dataflow.kafka import TopicNamer

Step = chainer_pb2.PipelineStepUpdate


def join_type(name: str | int | None) -> Step.PipelineJoinType:
    """``"inner"|"outer"|"any"`` (or a proto enum int) -> PipelineJoinType; missing -> Inner."""
    if isinstance(name, int):
        return cast(Step.PipelineJoinType, name)  # protobuf enum values are plain ints at run time
    return JoinType.from_name(name).chainer  # type: ignore[return-value]  # protobuf enum values are plain ints


def topic(topic_name: str, pipeline: str, tensor: str | None = None) -> chainer_pb2.PipelineTopic:
    t = chainer_pb2.PipelineTopic(pipelineName=pipeline, topicName=topic_name)
    if tensor:
        t.tensor = tensor
    return t


def _topics(items: Iterable[chainer_pb2.PipelineTopic | tuple[str, ...]] | None) -> list[chainer_pb2.PipelineTopic]:
    out = []
    for it in items or ():
        out.append(it if isinstance(it, chainer_pb2.PipelineTopic) else topic(*it))
    return out


def step_update(sink: str | chainer_pb2.PipelineTopic, sources: Iterable[chainer_pb2.PipelineTopic | tuple[str, ...]],
                *, pipeline: str = "", triggers: Iterable[chainer_pb2.PipelineTopic | tuple[str, ...]] = (),
                tensor_map: Iterable[tuple[str, str, str]] | Mapping[str, str] = (),
                join: str | int | None = None, triggers_join: str | int | None = None,
                window_ms: int | None = None, batch_size: int | None = None,
                batch_window_ms: int | None = None, batch_rolling: bool = False,
                pass_empty: bool = False) -> chainer_pb2.PipelineStepUpdate:
    """One PipelineStepUpdate. ``sources``/``triggers``: PipelineTopics or ``(topic, pipeline[, tensor])``
    tuples. ``tensor_map``: ``(pipelineName, topicAndTensor, tensorName)`` triples, or a mapping
    ``topicAndTensor -> tensorName`` for ``pipeline``. ``sink``: a topic name (pipelineName =
    ``pipeline``) or a PipelineTopic."""
    u = Step(inputJoinTy=join_type(join), triggersJoinTy=join_type(triggers_join), passEmptyResponses=pass_empty)
    u.sink.CopyFrom(sink if isinstance(sink, chainer_pb2.PipelineTopic) else topic(sink, pipeline))
    u.sources.extend(_topics(sources))
    u.triggers.extend(_topics(triggers))
    items = ((pipeline, k, v) for k, v in tensor_map.items()) if isinstance(tensor_map, Mapping) else tensor_map
    for p, key, name in items:
        u.tensorMap.add(pipelineName=p, topicAndTensor=key, tensorName=name)
    if window_ms is not None:
        u.joinWindowMs = window_ms
    if batch_size is not None or batch_window_ms is not None or batch_rolling:
        u.batch.SetInParent()
        if batch_size is not None:
            u.batch.size = batch_size
        if batch_window_ms is not None:
            u.batch.windowMs = batch_window_ms
        u.batch.rolling = batch_rolling
    return u


def create_message(pipeline: str, updates: Sequence[chainer_pb2.PipelineStepUpdate], *, version: int = 1,
                   uid: str | None = None, namer: TopicNamer | None = None, allow_cycles: bool = False,
                   max_step_revisits: int = 0, timestamp: int = 0) -> chainer_pb2.PipelineUpdateMessage:
    """A Create message around ``updates`` (output/error topics from ``namer``)."""
    namer = namer or TopicNamer()
    msg = chainer_pb2.PipelineUpdateMessage(
        op=chainer_pb2.PipelineUpdateMessage.Create, pipeline=pipeline, version=version,
        uid=uid or uuid.uuid4().hex[:20], pipelineOutputTopic=namer.pipeline_outputs(pipeline),
        pipelineErrorTopic=namer.errors(), allowCycles=allow_cycles, maxStepRevisits=max_step_revisits,
        timestamp=timestamp,
    )
    msg.updates.extend(updates)
    return msg
