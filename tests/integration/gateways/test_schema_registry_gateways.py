"""Both gateways with a schema-registry config: the pipeline gateway writes framed requests, the
model gateway reads them and writes framed responses, the pipeline gateway strips them again."""
from __future__ import annotations

import json
import urllib.request

from tritonclient.grpc import service_pb2 as pb

from dataflow import schema_registry as sr
from dataflow.kafka import TopicNamer
from gateways.model_service import ModelGatewayConfig, ModelGatewayService
from gateways.pipeline_service import PipelineGatewayConfig, PipelineGatewayService
from tests.fake_schema_registry import FakeSchemaRegistry

from . import fake_oip
from .harness import BackgroundLoop, free_port
from .test_model_gateway import _collect

BODY = {"inputs": [{"name": "INPUT", "datatype": "INT32", "shape": [3], "data": [1, 2, 3]}]}


def test_round_trip_through_both_gateways_is_framed_on_the_wire(kafka, tmp_path):
    grpc_port = free_port()
    server, _ = fake_oip.start_grpc(grpc_port)
    namer = TopicNamer(prefix=kafka.unique("srgw").replace("-", ""))
    kafka.create_topics(namer.errors())
    bg = BackgroundLoop()
    with FakeSchemaRegistry() as registry:
        path = registry.write_config(tmp_path)
        mgw = ModelGatewayService(ModelGatewayConfig(
            settings=kafka.settings, namer=namer, timeout_s=10, consumer_prefix=kafka.unique("srm"),
            static_models={"add10": f"grpc://127.0.0.1:{grpc_port}"}, schema_registry_config=path))
        pcfg = PipelineGatewayConfig(settings=kafka.settings, namer=namer, http_port=free_port(), grpc_port=free_port(),
                                     host="127.0.0.1", timeout_s=20.0, consumer_prefix=kafka.unique("srp"),
                                     schema_registry_config=path)
        pgw = PipelineGatewayService(pcfg)
        try:
            bg.run(mgw.start())
            assert mgw.gateway.wait_assigned("add10")
            bg.run(pgw.start())
            req = urllib.request.Request(f"http://127.0.0.1:{pcfg.http_port}/v2/models/add10/infer",
                                         data=json.dumps(BODY).encode(), method="POST",
                                         headers={"Content-Type": "application/json", "seldon-model": "add10.model"})
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 200
                out = json.loads(r.read())
            assert out["outputs"][0]["data"] == [11, 12, 13]

            [sent] = _collect(kafka, [namer.model_inputs("add10")], 1)
            [answer] = _collect(kafka, [namer.model_outputs("add10")], 1)
            client = sr.SchemaRegistryClient(sr.SchemaRegistryConfig(url=registry.url))
            assert client.schema_by_id(sr.schema_id_of(sent.value()))["schema"] == sr.schema_text(sr.REQUEST)
            assert client.schema_by_id(sr.schema_id_of(answer.value()))["schema"] == sr.schema_text(sr.RESPONSE)
            assert pb.ModelInferRequest.FromString(sent.value()[6:]).inputs[0].name == "INPUT"
            assert list(pb.ModelInferResponse.FromString(answer.value()[6:]).outputs[0].contents.int_contents) \
                == [11, 12, 13]
            assert set(registry.subjects) == {sr.subject_for_topic(namer.model_inputs("add10")),
                                              sr.subject_for_topic(namer.model_outputs("add10"))}
        finally:
            bg.run(pgw.stop())
            bg.run(mgw.stop())
            bg.close()
            server.stop(0)
