"""KafkaRunner with a schema-registry config: framed sink values whose ids resolve in the registry,
and raw values (processing unaffected) while the registry is down."""
from __future__ import annotations

import asyncio

from tritonclient.grpc import service_pb2 as pb

from dataflow import schema_registry as sr
from dataflow.oip import parse_request
from dataflow.runtime.base import RuntimeConfig
from dataflow.runtime.kafka_runtime import KafkaRunner
from tests.fake_schema_registry import FakeSchemaRegistry
from tests.integration.engine.fakes import make_fake_pipeline
from tests.integration.engine.harness import collect, create_message, new_namer, produce, step


def request(i: int) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(id=f"r{i}")
    req.inputs.add(name="x", datatype="INT64", shape=[2]).contents.int64_contents.extend([i, i + 1])
    return req


def run_chain(kafka, tmp_path, registry_config: str, name: str, n: int = 10):
    namer = new_namer(kafka)
    src, sink = namer.pipeline_inputs(name), namer.model_inputs("m1")
    msg = create_message(name, [step(name, [src], sink)], namer, with_error_step=False)
    cfg = RuntimeConfig(kafka=kafka.settings, state_dir=str(tmp_path), start_timeout_s=30, commit_interval_ms=200,
                        schema_registry_config=registry_config)

    async def main():
        runner = KafkaRunner(msg, cfg, pipeline_factory=make_fake_pipeline, memory_state=True)
        await runner.start()
        records = [(f"0.{name}.req{i}", request(i).SerializeToString()) for i in range(n)]
        await asyncio.to_thread(produce, kafka, src, records, pipeline=name)
        got = await asyncio.to_thread(collect, kafka, sink, n)
        stats = dict(runner.stats)
        await runner.stop()
        return got, stats

    got, stats = asyncio.run(main())
    return sink, got, stats


def test_sink_values_are_framed_with_a_registered_schema(kafka, tmp_path):
    with FakeSchemaRegistry() as registry:
        sink, got, stats = run_chain(kafka, tmp_path, registry.write_config(tmp_path), "srframed")
        client = sr.SchemaRegistryClient(sr.SchemaRegistryConfig(url=registry.url))
        assert len(got) == 10 and stats["failed"] == 0
        ids = {sr.schema_id_of(m.value()) for m in got}
        assert len(ids) == 1 and None not in ids
        schema = client.schema_by_id(ids.pop())
        assert schema == {"schema": sr.schema_text(sr.REQUEST), "schemaType": "PROTOBUF"}
        assert sr.subject_for_topic(sink) in registry.subjects
        for m in got:
            i = int(m.key().decode().rsplit("req", 1)[1])
            assert parse_request(m.value()) == request(i)
            assert m.value()[6:] == request(i).SerializeToString()
        registrations = [c for c in registry.calls if c[0] == "POST"]
        assert len(registrations) == 1  # cached per subject


def test_registry_down_falls_back_to_raw_values(kafka, tmp_path):
    registry = FakeSchemaRegistry()
    path = registry.write_config(tmp_path)  # its port, never served: connection refused
    registry.server.server_close()
    _sink, got, stats = run_chain(kafka, tmp_path, path, "srdown")
    assert len(got) == 10 and stats["failed"] == 0
    for m in got:
        i = int(m.key().decode().rsplit("req", 1)[1])
        assert m.value() == request(i).SerializeToString()


def test_faust_runtime_frames_too(kafka, tmp_path):
    """The Faust worker (another process, the real step compiler) frames its sink values as well."""
    from dataflow.runtime.faust_runtime import FaustRunner

    namer = new_namer(kafka)
    src, sink = namer.pipeline_inputs("srfaust"), namer.model_inputs("m1")
    msg = create_message("srfaust", [step("srfaust", [src], sink)], namer, with_error_step=False)
    with FakeSchemaRegistry() as registry:
        cfg = RuntimeConfig(kafka=kafka.settings, state_dir=str(tmp_path), start_timeout_s=60,
                            commit_interval_ms=200, schema_registry_config=registry.write_config(tmp_path))

        async def main():
            runner = FaustRunner(msg, cfg)
            await runner.start()
            await asyncio.to_thread(produce, kafka, src, [(f"0.srfaust.req{i}", request(i).SerializeToString())
                                                          for i in range(3)], pipeline="srfaust")
            got = await asyncio.to_thread(collect, kafka, sink, 3, 60.0)
            await runner.stop()
            return got

        got = asyncio.run(main())
        assert len(got) == 3
        for m in got:
            assert registry.schemas[sr.schema_id_of(m.value())]["schema"] == sr.schema_text(sr.REQUEST)
            assert [list(t.contents.int64_contents) for t in parse_request(m.value()).inputs] == \
                [list(t.contents.int64_contents) for t in request(int(m.key().decode().rsplit("req", 1)[1])).inputs]
