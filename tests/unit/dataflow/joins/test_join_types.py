"""JoinType: the one mapping between YAML names, scheduler JoinOp and Chainer PipelineJoinType."""
from __future__ import annotations

import pytest

from chainer_api import chainer_pb2, scheduler_pb2
from dataflow.joins import JoinType

Chainer = chainer_pb2.PipelineStepUpdate
Scheduler = scheduler_pb2.PipelineStep


@pytest.mark.parametrize("join,name,scheduler,chainer", [
    (JoinType.INNER, "inner", Scheduler.INNER, Chainer.Inner),
    (JoinType.OUTER, "outer", Scheduler.OUTER, Chainer.Outer),
    (JoinType.ANY, "any", Scheduler.ANY, Chainer.Any),
])
def test_each_join_round_trips_through_every_encoding(join, name, scheduler, chainer):
    assert JoinType.from_name(name.upper()) is join
    assert join.scheduler == scheduler and JoinType.from_scheduler(scheduler) is join
    assert join.chainer == chainer and JoinType.from_chainer(chainer) is join


def test_missing_join_is_inner():
    assert JoinType.from_name(None) is JoinType.INNER
    assert JoinType.from_name("") is JoinType.INNER
    assert JoinType.from_chainer(Chainer.Unknown) is JoinType.INNER


def test_unknown_join_values_are_refused():
    with pytest.raises(ValueError, match="expected inner, outer or any"):
        JoinType.from_name("left")
    with pytest.raises(KeyError):
        JoinType.from_chainer(7)
    with pytest.raises(KeyError):
        JoinType.from_scheduler(3)
