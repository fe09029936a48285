"""GroupJoin: when a consumer may leave its group (no broker: a stand-in consumer)."""
from __future__ import annotations

from dataflow.kafka import GroupJoin


class JoiningConsumer:
    """Completes the join (calls the assign callback) on its n-th poll."""

    def __init__(self, join: GroupJoin, polls_to_assign: int) -> None:
        self.join, self.left, self.polls = join, polls_to_assign, 0

    def poll(self, timeout):
        self.polls += 1
        if self.polls == self.left:
            self.join.assigned()
        return None


def test_finish_polls_until_the_assignment_arrives():
    join = GroupJoin(session_timeout_ms=60_000)
    join.started()
    consumer = JoiningConsumer(join, polls_to_assign=3)
    join.finish(consumer)
    assert consumer.polls == 3 and not join.pending


def test_nothing_to_wait_for_without_a_join():
    join = GroupJoin(session_timeout_ms=60_000)
    consumer = JoiningConsumer(join, polls_to_assign=1)
    join.finish(consumer)
    assert consumer.polls == 0


def test_a_join_older_than_the_session_timeout_is_given_up_on():
    join = GroupJoin(session_timeout_ms=0)
    join.started()
    assert not join.pending
    consumer = JoiningConsumer(join, polls_to_assign=10)
    join.finish(consumer)
    assert consumer.polls == 0
