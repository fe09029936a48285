"""Join kinds and their three encodings: the name users write in Pipeline YAML (``inner``,
``outer``, ``any``), the scheduler proto's ``JoinOp`` (0/1/2) and the Chainer proto's
``PipelineJoinType`` (Unknown/Inner/Outer/Any = 0/1/2/3; Unknown is read as inner, as the
operator defaults a missing join type). Every conversion between them is here."""
from __future__ import annotations

import enum

from chainer_api import chainer_pb2, scheduler_pb2

_Chainer = chainer_pb2.PipelineStepUpdate
_Scheduler = scheduler_pb2.PipelineStep


class JoinType(str, enum.Enum):
    INNER = "inner"
    OUTER = "outer"
    ANY = "any"

    @classmethod
    def from_name(cls, name: str | None) -> JoinType:
        """A YAML join name, any case; missing or empty -> inner. ValueError names the choices."""
        if not name:
            return cls.INNER
        try:
            return cls(name.lower())
        except ValueError:
            raise ValueError(f"unknown join type {name!r} (expected inner, outer or any)") from None

    @classmethod
    def from_chainer(cls, value: int) -> JoinType:
        """A Chainer ``PipelineJoinType``; Unknown -> inner. KeyError for a value outside 0-3."""
        return _FROM_CHAINER[value]  # type: ignore[index]  # protobuf enum values are plain ints

    @classmethod
    def from_scheduler(cls, value: int) -> JoinType:
        """A scheduler ``JoinOp``. KeyError for a value outside 0-2."""
        return _FROM_SCHEDULER[value]  # type: ignore[index]  # protobuf enum values are plain ints

    @property
    def chainer(self) -> int:
        """This join as a Chainer ``PipelineJoinType``."""
        return _TO_CHAINER[self]

    @property
    def scheduler(self) -> int:
        """This join as a scheduler ``JoinOp``."""
        return _TO_SCHEDULER[self]


_TO_CHAINER = {JoinType.INNER: _Chainer.Inner, JoinType.OUTER: _Chainer.Outer, JoinType.ANY: _Chainer.Any}
_FROM_CHAINER = {_Chainer.Unknown: JoinType.INNER, **{v: k for k, v in _TO_CHAINER.items()}}
_TO_SCHEDULER = {JoinType.INNER: _Scheduler.INNER, JoinType.OUTER: _Scheduler.OUTER, JoinType.ANY: _Scheduler.ANY}
_FROM_SCHEDULER = {v: k for k, v in _TO_SCHEDULER.items()}
