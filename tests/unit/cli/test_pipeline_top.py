"""`dataflow pipeline top`: rates from two scrapes of the engines' /metrics, summed over replicas."""
from __future__ import annotations

import asyncio
import threading

import pytest

from dataflow.broker import free_port
from dataflow.engine.metrics import engine_registry
from dataflow_cli import main
from dataflow_cli.pipeline_top import parse, table_rows
from tests.unit.dataflow.engine.test_engine_metrics import JOIN, NS, FakeRunner, response

A_OUT = f"{NS}.model.a.outputs"


class BusyRunner(FakeRunner):
    """Every scrape finds 5 more records of branch a in the join (so two scrapes give a rate)."""

    def step_totals(self):
        task = self.tasks.get(0)
        for _ in range(5):
            self.fed = getattr(self, "fed", 0) + 1
            task.process(response(f"0.j.r{self.fed}").evolve(topic=A_OUT), 0)
            self.stats["consumed"] += 1
        return super().step_totals()


@pytest.fixture
def engine_metrics():
    """A health server with /metrics over a BusyRunner, on its own event loop thread."""
    from dataflow.engine.health import start_health_server

    port = free_port()
    runner = BusyRunner(JOIN)
    runner.tasks.assign([0])
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    health = asyncio.run_coroutine_threadsafe(start_health_server(
        port, ready=lambda: True, started=lambda: True, host="127.0.0.1",
        registry=engine_registry(lambda: [runner])), loop).result(10)
    yield f"127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(health.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_rates_are_differences_over_the_interval_summed_over_engines():
    def text(consumed, polled, buffered):
        return (f'dataflow_pipeline_records_polled_total{{pipeline="p",version="2"}} {polled}\n'
                f'dataflow_pipeline_consumer_lag{{pipeline="p",version="2",topic="t",partition="0"}} 3\n'
                f'dataflow_step_records_consumed_total{{pipeline="p",version="2",step="s"}} {consumed}\n'
                f'dataflow_step_records_dropped_total{{pipeline="p",version="2",step="s",reason="empty"}} 1\n'
                f'dataflow_step_errors_total{{pipeline="p",version="2",step="s",reason="punctuate"}} 2\n'
                f'dataflow_step_join_buffered_records{{pipeline="p",version="2",step="s"}} {buffered}\n'
                f'dataflow_step_latency_seconds_count{{pipeline="p",version="2",step="s"}} {consumed}\n'
                f'dataflow_step_latency_seconds_sum{{pipeline="p",version="2",step="s"}} {consumed * 0.0001}\n')
    prev = parse(text(10, 10, 0))
    parse(text(0, 0, 0), prev)                               # a second engine, idle so far
    cur = parse(text(30, 30, 4))
    parse(text(20, 20, 1), cur)                              # the second engine did 20 meanwhile
    rows = table_rows(prev, cur, 2.0)
    assert rows == [
        ("p", "2", "*", "20.0", "0.0", "", "", "", "6", "4"),
        ("", "", "s", "20.0", "0.0", "0.0", "100us", "join=5", "", "4"),
    ]
    assert table_rows(prev, cur, 2.0, "other") == []


def test_once_prints_rates_from_a_live_engine(engine_metrics, capsys):
    code = main(["pipeline", "top", "--once", "--interval", "0.2", "--metrics", engine_metrics])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("dataflow pipeline top: rates over ")
    assert lines[1].split() == ["pipeline", "version", "step", "in/s", "out/s", "dropped/s", "latency", "waiting",
                                "lag", "errors"]
    rows = {line.split()[0]: line.split() for line in lines[3:]}
    pipeline = rows["j"]
    assert pipeline[:3] == ["j", "4", "*"] and float(pipeline[3]) > 0       # polled/s
    joined = rows["joined"]
    assert float(joined[1]) > 0                                            # in/s
    assert joined[5] == "join=10"                                          # waiting for branch b
    assert rows["a"][1] == "0.0"


def test_name_filter_and_unreachable_engines(engine_metrics, capsys):
    code = main(["pipeline", "top", "ghost", "--once", "--interval", "0.1", "--metrics", engine_metrics])
    out, _ = capsys.readouterr()
    assert code == 0 and "no pipeline ghost on these engines" in out
    code = main(["pipeline", "top", "--once", "--interval", "0.1", "--metrics", "127.0.0.1:1"])
    _, err = capsys.readouterr()
    assert code == 1 and err.startswith("Error: cannot read engine metrics: http://127.0.0.1:1/metrics")
    assert err.count("\n") == 1
    code = main(["pipeline", "top", "--once", "--interval", "0.1", "--metrics", f"{engine_metrics},127.0.0.1:1"])
    out, _ = capsys.readouterr()
    assert code == 0 and "unreachable: http://127.0.0.1:1/metrics" in out
