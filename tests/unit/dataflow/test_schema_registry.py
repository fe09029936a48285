"""Schema Registry framing: config file, wire format, registration cache and fall-backs."""
from __future__ import annotations

import asyncio
import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

from dataflow import schema_registry as sr
from dataflow.oip import parse_request, strip_schema_prefix
from tests.fake_schema_registry import FakeSchemaRegistry


@pytest.fixture
def registry():
    with FakeSchemaRegistry() as r:
        yield r


def framer(registry, **kw) -> sr.Framer:
    return sr.Framer(sr.SchemaRegistryClient(sr.SchemaRegistryConfig(url=registry.url, timeout_s=2)), **kw)


def request_bytes(name="in", values=(1, 2, 3)) -> bytes:
    req = pb.ModelInferRequest(model_name="m")
    t = req.inputs.add(name=name, datatype="INT64", shape=[len(values)])
    t.contents.int64_contents.extend(values)
    return req.SerializeToString()


# ---------------------------------------------------------------------------------- config


def test_config_from_directory_as_the_reference_mounts_it(tmp_path):
    (tmp_path / ".confluent-schema.yaml").write_text(
        "schemaRegistry:\n  client:\n    URL: https://sr.example:8081/\n    username: key\n    password: secret\n")
    cfg = sr.load_config(tmp_path)
    assert (cfg.url, cfg.username, cfg.password) == ("https://sr.example:8081", "key", "secret")


def test_config_from_file_path_and_scheme_defaults_to_http(tmp_path):
    f = tmp_path / "sr.yaml"
    f.write_text("schemaRegistry:\n  client:\n    URL: sr.example:8081\n")
    assert sr.load_config(f) == sr.SchemaRegistryConfig(url="http://sr.example:8081")


@pytest.mark.parametrize("content, message", [
    (None, "No such file"),
    ("schemaRegistry:\n  client:\n    username: x\n", "URL is required"),
    ("other: 1\n", "URL is required"),
    ("schemaRegistry: [1\n", "not valid YAML"),
    ("- 1\n", "expected schemaRegistry.client.URL"),
])
def test_config_errors_name_the_file(tmp_path, content, message):
    if content is not None:
        (tmp_path / ".confluent-schema.yaml").write_text(content)
    with pytest.raises(sr.SchemaRegistryConfigError, match=message) as info:
        sr.load_config(tmp_path)
    assert ".confluent-schema.yaml" in str(info.value)


def test_framer_for_is_off_without_a_path_and_shared_per_path(registry, tmp_path):
    assert sr.framer_for(None) is None and sr.framer_for("") is None
    path = registry.write_config(tmp_path)
    assert sr.framer_for(path) is sr.framer_for(path)
    assert sr.framer_for(path, validate=False) is not sr.framer_for(path)


# ---------------------------------------------------------------------------------- wire format


def test_topic_rules_follow_the_reference():
    assert sr.message_type_for_topic("seldon.default.model.m.inputs") == sr.REQUEST
    assert sr.message_type_for_topic("seldon.default.pipeline.p.outputs") == sr.RESPONSE
    assert sr.message_type_for_topic("seldon.default.errors.errors") is None
    assert sr.message_type_for_topic("g-state-changelog") is None
    assert sr.subject_for_topic("seldon.default.model.m.inputs") == "seldon.default.model.m.inputs-value"


def test_message_index_encoding():
    assert sr.encode_message_indexes([0]) == b"\x00"
    assert sr.encode_message_indexes([1]) == b"\x02\x02"
    assert sr.encode_message_indexes([0, 2]) == b"\x04\x00\x04"
    assert sr.encode_message_indexes([70]) == b"\x02\x8c\x01"


def test_frame_layout():
    assert sr.frame(0x01020304, b"\x0a\x01m") == b"\x00\x01\x02\x03\x04\x00\x0a\x01m"
    assert sr.schema_id_of(sr.frame(7, b"")) == 7
    assert sr.schema_id_of(b"\x0a\x01m") is None


tensors = st.lists(st.integers(min_value=-2**63, max_value=2**63 - 1), max_size=20)


@settings(max_examples=200, deadline=None)
@given(schema_id=st.integers(min_value=0, max_value=2**32 - 1), name=st.text(max_size=20), values=tensors,
       raw=st.lists(st.binary(max_size=64), max_size=3))
def test_framed_then_stripped_is_the_original_protobuf(schema_id, name, values, raw):
    req = pb.ModelInferRequest(model_name=name, raw_input_contents=raw)
    req.inputs.add(name=name, datatype="INT64", shape=[len(values)]).contents.int64_contents.extend(values)
    payload = req.SerializeToString()
    framed = sr.frame(schema_id, payload)
    assert len(framed) == len(payload) + 6
    assert strip_schema_prefix(framed) == payload
    assert sr.schema_id_of(framed) == schema_id
    assert parse_request(framed) == req


@given(schema_id=st.integers(min_value=0, max_value=2**32 - 1), payload=st.binary(max_size=200))
def test_framed_then_stripped_is_the_original_for_any_bytes(schema_id, payload):
    assert strip_schema_prefix(sr.frame(schema_id, payload)) == payload


def test_schema_text_matches_the_oip_messages_field_for_field(tmp_path):
    """The registered ``.proto`` text must describe what is actually written."""
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    out = tmp_path / "set.pb"
    assert protoc.main(["protoc", f"-I{sr._SCHEMA_DIR}", f"--descriptor_set_out={out}",
                        "infer_request.proto", "infer_response.proto"]) == 0
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())

    def flat(msg, out, parent=""):  # message name -> {(field name, number, type, label, type name tail)}
        name = f"{parent}.{msg.name}" if msg.options.map_entry else msg.name  # map entries per owner
        out[name] = {(f.name, f.number, f.type, f.label, f.type_name.rsplit(".", 1)[-1]) for f in msg.field}
        for m in msg.nested_type:
            flat(m, out, msg.name)
        return out

    for file in fds.file:
        assert file.package == "inferenceSchema"
        assert len(file.message_type) == 1  # message index [0] -> the single 0x00 byte
        ours = flat(file.message_type[0], {})
        theirs: dict = {}
        for message in vars(pb).values():  # tritonclient nests fewer types; compare by name
            if hasattr(message, "DESCRIPTOR") and hasattr(message.DESCRIPTOR, "fields"):
                proto = descriptor_pb2.DescriptorProto()
                message.DESCRIPTOR.CopyToProto(proto)
                flat(proto, theirs)
        for name, fields in ours.items():
            # Same numbers and types; newer KServe parameter kinds exist only on their side.
            assert fields <= theirs[name], name


# ---------------------------------------------------------------------------------- framer


def test_frames_with_a_registered_id_cached_per_subject(registry):
    f = framer(registry)
    topic = "seldon.default.model.m.inputs"
    value = request_bytes()
    a, b = f.frame(topic, value), f.frame(topic, request_bytes(values=(4,)))
    sid = sr.schema_id_of(a)
    assert sid is not None and sr.schema_id_of(b) == sid and a[6:] == value
    assert registry.subjects == {topic + "-value": [sid]}
    assert registry.schemas[sid] == {"schema": sr.schema_text(sr.REQUEST), "schemaType": "PROTOBUF"}
    assert [c for c in registry.calls if c[0] == "POST"] == [
        ("POST", "/subjects/seldon.default.model.m.inputs-value/versions?normalize=true")]
    resp = pb.ModelInferResponse(model_name="m").SerializeToString() + b"\x12\x011"
    out = f.frame("seldon.default.pipeline.p.outputs", resp)
    assert registry.schemas[sr.schema_id_of(out)]["schema"] == sr.schema_text(sr.RESPONSE)


def test_other_topics_tombstones_and_non_oip_values_stay_raw(registry):
    f = framer(registry)
    assert f.frame("seldon.default.errors.errors", b"boom") == b"boom"
    assert f.frame("seldon.default.model.m.inputs", None) is None
    assert f.frame("seldon.default.model.m.inputs", b"\xff\xff not protobuf") == b"\xff\xff not protobuf"
    assert registry.calls == []
    unchecked = framer(registry, validate=False)
    assert sr.schema_id_of(unchecked.frame("seldon.default.model.m.inputs", b"\xff")) is not None


def test_an_already_framed_value_is_reframed_not_framed_twice(registry):
    f = framer(registry)
    value = request_bytes()
    out = f.frame("seldon.default.model.m.inputs", sr.frame(999, value))
    assert out[6:] == value and sr.schema_id_of(out) != 999


def test_registry_down_writes_raw_and_retries_after_the_interval():
    now = [100.0]
    client = sr.SchemaRegistryClient(sr.SchemaRegistryConfig(url="http://127.0.0.1:9", timeout_s=1))
    f = sr.Framer(client, clock=lambda: now[0])
    calls = []
    register = client.register
    client.register = lambda *a: calls.append(a) or register(*a)
    value = request_bytes()
    assert f.frame("seldon.default.model.m.inputs", value) == value
    assert f.frame("seldon.default.model.m.inputs", value) == value
    assert len(calls) == 1 and f.ready("seldon.default.model.m.inputs")
    now[0] += client.config.retry_after_s + 1
    assert not f.ready("seldon.default.model.m.inputs")
    assert f.frame("seldon.default.model.m.inputs", value) == value
    assert len(calls) == 2


def test_read_only_registry_falls_back_to_lookup(registry):
    topic = "seldon.default.model.m.inputs"
    sid = registry.register(topic + "-value", {"schema": sr.schema_text(sr.REQUEST), "schemaType": "PROTOBUF"})
    registry.read_only = True
    assert sr.schema_id_of(framer(registry).frame(topic, request_bytes())) == sid
    assert ("POST", f"/subjects/{topic}-value?normalize=true") in registry.calls


def test_basic_auth_from_config(registry, tmp_path):
    path = registry.write_config(tmp_path, username="key", password="s3cret")
    f = sr.Framer(sr.SchemaRegistryClient(sr.load_config(path)))
    f.frame("seldon.default.model.m.inputs", request_bytes())
    assert registry.auth[-1] == "Basic " + base64.b64encode(b"key:s3cret").decode()


def test_aframe_registers_off_the_event_loop(registry):
    f = framer(registry)
    topic = "seldon.default.model.m.outputs"
    value = pb.ModelInferResponse(model_name="m").SerializeToString() + b"\x1a\x01x"
    assert not f.ready(topic)
    out = asyncio.run(f.aframe(topic, value))
    assert f.ready(topic) and out[6:] == value and sr.schema_id_of(out) is not None


def test_client_schema_by_id_and_errors(registry):
    client = sr.SchemaRegistryClient(sr.SchemaRegistryConfig(url=registry.url))
    sid = client.register("s-value", sr.schema_text(sr.REQUEST))
    assert client.schema_by_id(sid)["schemaType"] == "PROTOBUF"
    assert client.subjects() == ["s-value"]
    with pytest.raises(sr.SchemaRegistryError) as info:
        client.schema_by_id(12345)
    assert info.value.status == 404
