"""Batch scoring reads its input lazily: the run holds at most its in-flight window of requests,
whatever the input size, and skips requests already answered when resuming."""
import gc
import json
import weakref

import pytest

from gateways.batch import (
    AnsweredSet,
    InputLine,
    InputWindow,
    count_inputs,
    input_ids,
    read_inputs,
)


class CountingLines:
    """An input of ``n`` lines that counts how many were pulled and which are still alive."""

    def __init__(self, n: int) -> None:
        self.n, self.pulled = n, 0
        self.refs: list[weakref.ref] = []

    def __iter__(self):
        for i in range(self.n):
            yield self._line(i)

    def _line(self, i: int) -> InputLine:
        self.pulled += 1
        line = InputLine(i, f"id-{i}", {"inputs": []})
        self.refs.append(weakref.ref(line))
        return line

    def alive(self) -> int:
        gc.collect()
        return sum(1 for r in self.refs if r() is not None)


def test_window_pulls_lines_only_when_it_has_room():
    lines = CountingLines(10_000)
    window = InputWindow(lines, AnsweredSet(), size=5)
    for _ in range(5):
        line = window.next_line()
        window.sent(line, at=0.0)
    assert window.next_line() is None, "full"
    assert lines.pulled == 5
    window.settle(2)
    line = window.next_line()
    assert line.index == 5 and lines.pulled == 6


def test_memory_is_flat_in_the_input_size():
    """Through a whole 10,000-line input with answers arriving out of order, the window never
    keeps more than its size of requests and no input line outlives its sending."""
    lines = CountingLines(10_000)
    window = InputWindow(lines, AnsweredSet(), size=8)
    most_in_flight = 0
    step = 0
    while not window.finished:
        while (line := window.next_line()) is not None:
            window.sent(line, at=float(line.index))
        del line
        most_in_flight = max(most_in_flight, len(window.in_flight))
        assert lines.pulled - len(window.answered) <= 8
        if step % 100 == 0:
            assert lines.alive() == 0, "sent lines are not kept"
        # answer the newest and the oldest in flight, so answers come out of order
        if window.in_flight:
            window.settle(max(window.in_flight))
        if window.in_flight:
            window.settle(min(window.in_flight))
        step += 1
    assert lines.pulled == 10_000 and most_in_flight == 8
    assert len(window.answered) == 10_000
    assert window.answered.floor == 10_000 and not window.answered._above, "answered indices are folded"


def test_resume_skips_lines_already_answered():
    lines = [InputLine(i, None, {}) for i in range(10)]
    window = InputWindow(lines, AnsweredSet({0, 1, 2, 5, 9}), size=100)
    sent = []
    while (line := window.next_line()) is not None:
        window.sent(line, at=0.0)
        sent.append(line.index)
    assert sent == [3, 4, 6, 7, 8]
    assert window.exhausted and not window.finished


def test_a_line_answered_while_others_are_in_flight_is_not_sent():
    lines = [InputLine(i, None, {}) for i in range(4)]
    window = InputWindow(lines, AnsweredSet(), size=1)
    window.sent(window.next_line(), at=0.0)
    window.settle(1)  # a late answer to an earlier attempt's request
    window.settle(0)
    assert [window.next_line().index] == [2]


def test_answered_set():
    s = AnsweredSet([3, 0, 1])
    assert (0 in s, 1 in s, 2 in s, 3 in s) == (True, True, False, True)
    assert len(s) == 3 and s.floor == 2
    s.add(2)
    s.add(1)
    assert len(s) == 4 and s.floor == 4
    assert -1 not in s, "an index outside the input is not answered by the floor"
    s.add(-1)
    assert -1 in s and len(s) == 5


@pytest.fixture
def jsonl(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text(json.dumps({"id": "a", "inputs": []}) + "\n\n" + "not json\n" + json.dumps({"inputs": []}) + "\n")
    return str(f)


def test_reading_keeps_indices_and_problems(jsonl):
    lines = list(read_inputs(jsonl, "jsonl"))
    assert [(ln.index, ln.id, ln.body is None) for ln in lines] == [(0, "a", False), (2, None, True), (3, None, False)]
    assert count_inputs(jsonl, "jsonl") == 3
    assert input_ids(jsonl, "jsonl", {0, 3, 7}) == {0: "a", 3: None}
    assert input_ids(jsonl, "jsonl", set()) == {}


def test_result_file_recovery_cuts_a_torn_line(tmp_path):
    from gateways.batch import ResultWriter

    out = tmp_path / "out.jsonl"
    good = b'{"index":0}\n{"index":2}\r\n{"index":1}\n'
    out.write_bytes(good + b'{"index":3')
    writer = ResultWriter(str(out), "jsonl")
    writer.close()
    assert sorted(writer.existing) == [0, 1, 2] and writer.existing.floor == 3
    assert out.read_bytes() == good
