"""Optional Confluent Schema Registry framing of the OIP values this project writes to Kafka.

Why: Seldon Core 2 can be pointed at a Confluent Schema Registry so that tools of that ecosystem
(Kafka Connect, ksqlDB, Control Center...) can decode the inference topics. Its writers then
register the protobuf schema of each value type for the topic's subject and prefix every value
with the Confluent wire framing::

    0x00 | schema id (4 bytes, big-endian) | message indexes | protobuf bytes

The message indexes locate the message type in the registered ``.proto``; both schemas here
declare one top-level message, whose index list ``[0]`` is encoded as the single byte ``0x00``.
So a framed value carries exactly 6 bytes more, which is what every reader here and in the
reference strips (:func:`dataflow.oip.strip_schema_prefix`: drop 6 bytes when the first is 0;
a protobuf message never starts with byte 0, so readers need no configuration).

Turned on, like the reference, only when a config file is given: a directory holding
``.confluent-schema.yaml`` (what the reference's Helm chart mounts) or the file itself::

    schemaRegistry:
      client:
        URL: https://schema-registry.example:8081
        username: api-key        # optional, HTTP basic auth
        password: api-secret

Which values are framed follows the reference, by the topic's last dot-separated part: values
written to ``*.inputs`` are ``ModelInferRequest``, to ``*.outputs`` ``ModelInferResponse`` (schemas
of package ``inferenceSchema``, ``dataflow/schemas/*.proto``); anything else (the errors topic,
changelogs) stays raw. Subjects use the topic name strategy (``<topic>-value``).

Failures never stop the data: if the registry cannot be reached or refuses the schema, the value
is written raw (readers accept both), a warning is logged and the subject is not asked again for
``retry_after_s``, so a registry outage costs one failed HTTP call per topic and interval instead
of one per record.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import struct
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import yaml

log = logging.getLogger(__name__)

CONFIG_FILE_NAME = ".confluent-schema.yaml"
GATEWAY_ENV = "SCHEMA_REGISTRY_CONFIG_PATH"              # the Go gateways' variable
ENGINE_ENV = "SELDON_KAFKA_SCHEMA_REGISTRY_CONFIG_PATH"  # kafka.schema.registry.config.path, SELDON_ form
MAGIC_BYTE = 0
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"

REQUEST, RESPONSE = "ModelInferRequest", "ModelInferResponse"
_SCHEMA_FILES = {REQUEST: "infer_request.proto", RESPONSE: "infer_response.proto"}
_SUFFIX_TYPES = {"inputs": REQUEST, "outputs": RESPONSE}
_SCHEMA_DIR = Path(__file__).with_name("schemas")
_HEADER = struct.Struct(">bI")


class SchemaRegistryConfigError(ValueError):
    """The schema-registry config file is missing or invalid; the message names the file."""


class SchemaRegistryError(RuntimeError):
    """The registry could not be reached (``status`` None) or answered with an HTTP error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class SchemaRegistryConfig:
    url: str
    username: str = ""
    password: str = ""
    timeout_s: float = 5.0       # per HTTP call: a registration blocks the first write to a topic
    retry_after_s: float = 30.0  # after a failure, the subject is written raw this long


def config_file(path: str | os.PathLike[str]) -> Path:
    """The reference passes a directory and reads ``.confluent-schema.yaml`` in it; a file path is
    accepted too."""
    p = Path(path)
    return p / CONFIG_FILE_NAME if p.is_dir() else p


def load_config(path: str | os.PathLike[str]) -> SchemaRegistryConfig:
    """Read the reference-format file. A given but missing or URL-less file is an error (the
    reference refuses to start then too): framing was asked for and would silently not happen."""
    file = config_file(path)
    try:
        doc = yaml.safe_load(file.read_text()) or {}
    except OSError as exc:
        raise SchemaRegistryConfigError(f"schema registry config {file}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise SchemaRegistryConfigError(f"schema registry config {file} is not valid YAML: {exc}") from None
    client = doc.get("schemaRegistry", {}) if isinstance(doc, dict) else None
    client = client.get("client", {}) if isinstance(client, dict) else None
    if not isinstance(client, dict):
        raise SchemaRegistryConfigError(f"schema registry config {file}: expected schemaRegistry.client.URL")
    url = str(client.get("URL") or client.get("url") or "").strip()
    if not url:
        raise SchemaRegistryConfigError(f"schema registry config {file}: schemaRegistry.client.URL is required")
    if "://" not in url:
        url = "http://" + url
    return SchemaRegistryConfig(url=url.rstrip("/"), username=str(client.get("username") or ""),
                                password=str(client.get("password") or ""))


def schema_text(message_type: str) -> str:
    """The ``.proto`` text registered for ``ModelInferRequest`` / ``ModelInferResponse``."""
    return (_SCHEMA_DIR / _SCHEMA_FILES[message_type]).read_text()


def message_type_for_topic(topic: str) -> str | None:
    """``*.inputs`` -> request, ``*.outputs`` -> response, else None (written raw)."""
    return _SUFFIX_TYPES.get(topic.rsplit(".", 1)[-1])


def subject_for_topic(topic: str) -> str:
    """Topic name strategy, the serializers' default in the reference."""
    return f"{topic}-value"


# ------------------------------------------------------------------------------------- framing

def _zigzag_varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        byte = z & 0x7F
        z >>= 7
        if z:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_message_indexes(indexes: Sequence[int]) -> bytes:
    """Confluent's encoding: a zigzag-varint count then each index, with ``[0]`` (the first
    top-level message, the common case) shortened to the single byte ``0x00``."""
    if list(indexes) == [0]:
        return b"\x00"
    return _zigzag_varint(len(indexes)) + b"".join(_zigzag_varint(i) for i in indexes)


def frame(schema_id: int, payload: bytes, indexes: Sequence[int] = (0,)) -> bytes:
    """``payload`` with the Confluent wire framing for ``schema_id``."""
    return _HEADER.pack(MAGIC_BYTE, schema_id) + encode_message_indexes(indexes) + payload


def schema_id_of(value: bytes) -> int | None:
    """The schema id of a framed value, else None."""
    if len(value) >= 6 and value[0] == MAGIC_BYTE:
        schema_id: int = _HEADER.unpack_from(value)[1]
        return schema_id
    return None


# ------------------------------------------------------------------------------------- client

class SchemaRegistryClient:
    """The three REST calls framing needs, over urllib (short timeouts, no retries: the caller
    falls back to raw values and retries later)."""

    def __init__(self, config: SchemaRegistryConfig) -> None:
        self.config = config
        self._auth = None
        if config.username or config.password:
            token = base64.b64encode(f"{config.username}:{config.password}".encode()).decode()
            self._auth = f"Basic {token}"

    def _call(self, method: str, path: str, body: dict[str, str] | None = None) -> object:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.config.url + path, data=data, method=method)
        req.add_header("Accept", CONTENT_TYPE)
        if data is not None:
            req.add_header("Content-Type", CONTENT_TYPE)
        if self._auth:
            req.add_header("Authorization", self._auth)
        try:
            with urllib.request.urlopen(req, timeout=self.config.timeout_s) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode("utf-8", "replace")
            raise SchemaRegistryError(f"{method} {path}: HTTP {exc.code} {detail}", exc.code) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise SchemaRegistryError(f"{method} {path}: {getattr(exc, 'reason', exc)}") from None

    @staticmethod
    def _subject_path(subject: str) -> str:
        return "/subjects/" + urllib.parse.quote(subject, safe="")

    @staticmethod
    def _id(answer: object, what: str) -> int:
        if isinstance(answer, dict) and isinstance(answer.get("id"), int):
            schema_id: int = answer["id"]
            return schema_id
        raise SchemaRegistryError(f"{what}: no schema id in answer {answer!r:.200}")

    def register(self, subject: str, schema: str) -> int:
        """Register (or find, if identical after normalisation) ``schema`` under ``subject``."""
        path = self._subject_path(subject) + "/versions?normalize=true"
        return self._id(self._call("POST", path, {"schemaType": "PROTOBUF", "schema": schema}), path)

    def lookup(self, subject: str, schema: str) -> int:
        """The id of ``schema`` if already registered under ``subject`` (read-only registries)."""
        path = self._subject_path(subject) + "?normalize=true"
        return self._id(self._call("POST", path, {"schemaType": "PROTOBUF", "schema": schema}), path)

    def schema_by_id(self, schema_id: int) -> dict[str, Any]:
        answer = self._call("GET", f"/schemas/ids/{int(schema_id)}")
        if not isinstance(answer, dict):
            raise SchemaRegistryError(f"schema {schema_id}: unexpected answer {answer!r:.200}")
        return answer

    def subjects(self) -> list[str]:
        answer = self._call("GET", "/subjects")
        return answer if isinstance(answer, list) else []


# ------------------------------------------------------------------------------------- framer

def _validator(message_type: str) -> Callable[[bytes], object]:
    # imported here: tritonclient.grpc adds ~100 ms to every `dataflow` command (the CLI loads this module)
    from tritonclient.grpc import service_pb2 as pb  # field-for-field the inferenceSchema messages

    parse: Callable[[bytes], object] = getattr(pb, message_type).FromString
    return parse


class Framer:
    """Frames values per topic; schema ids cached per subject, shared by every thread.

    ``validate`` parses each value as its topic's message type first and writes it raw if that
    fails (the reference serializers parse too). Writers that only ever produce values they
    serialised themselves (the engine) turn it off to keep the per-record cost to a dict look-up.
    """

    def __init__(self, client: SchemaRegistryClient, *, validate: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.validate = validate
        self.retry_after_s = client.config.retry_after_s
        self._clock = clock
        self._ids: dict[str, int] = {}
        self._failed_at: dict[str, float] = {}
        self._prefixes: dict[str, bytes] = {}  # topic -> its framing, b"" for topics written raw
        self._lock = threading.Lock()
        self._validators = {t: _validator(t) for t in _SCHEMA_FILES} if validate else {}

    def ready(self, topic: str) -> bool:
        """True when :meth:`frame` for ``topic`` will not call the registry."""
        if message_type_for_topic(topic) is None:
            return True
        subject = subject_for_topic(topic)
        if subject in self._ids:
            return True
        failed = self._failed_at.get(subject)
        return failed is not None and self._clock() - failed < self.retry_after_s

    def schema_id(self, topic: str) -> int | None:
        """The topic's schema id, registering the schema on first use; None while it cannot be had."""
        subject = subject_for_topic(topic)
        sid = self._ids.get(subject)
        if sid is not None:
            return sid
        message_type = message_type_for_topic(topic)
        if message_type is None:
            return None
        with self._lock:
            sid = self._ids.get(subject)
            if sid is not None:
                return sid
            failed = self._failed_at.get(subject)
            if failed is not None and self._clock() - failed < self.retry_after_s:
                return None
            text = schema_text(message_type)
            try:
                try:
                    sid = self.client.register(subject, text)
                except SchemaRegistryError as exc:
                    if exc.status is None:  # unreachable: a look-up would fail the same way
                        raise
                    sid = self.client.lookup(subject, text)
            except SchemaRegistryError as exc:
                self._failed_at[subject] = self._clock()
                log.warning("schema registry: cannot register %s for %s, writing raw values for %gs: %s",
                            message_type, subject, self.retry_after_s, exc)
                return None
            self._failed_at.pop(subject, None)
            self._ids[subject] = sid
            log.info("schema registry: %s registered for %s with id %d", message_type, subject, sid)
            return sid

    @overload
    def frame(self, topic: str, value: bytes) -> bytes: ...
    @overload
    def frame(self, topic: str, value: None) -> None: ...

    def frame(self, topic: str, value: bytes | None) -> bytes | None:
        """``value`` framed for ``topic``, or unchanged (other topics, tombstones, failures).

        A value that is already framed (read framed, passed through) is re-framed with this
        topic's schema id rather than framed twice. Once a topic's id is known this is a dict
        look-up and a concatenation."""
        if value is None:
            return None
        prefix = self._prefixes.get(topic)
        if prefix == b"":
            return value
        payload = value[6:] if len(value) >= 6 and value[0] == MAGIC_BYTE else value
        if self.validate:
            message_type = message_type_for_topic(topic)
            try:
                if message_type is not None:
                    self._validators[message_type](bytes(payload))
            except Exception:
                log.debug("value for %s is not a %s: written raw", topic, message_type)
                return value
        if prefix is None:
            prefix = self._prefix(topic)
            if not prefix:
                return value
        return prefix + payload

    def _prefix(self, topic: str) -> bytes | None:
        """The topic's framing (cached), b"" for topics written raw, None while the id is unknown."""
        if message_type_for_topic(topic) is None:
            self._prefixes[topic] = b""
            return b""
        sid = self.schema_id(topic)
        if sid is None:
            return None
        prefix = self._prefixes[topic] = frame(sid, b"")
        return prefix

    @overload
    async def aframe(self, topic: str, value: bytes) -> bytes: ...
    @overload
    async def aframe(self, topic: str, value: None) -> None: ...

    async def aframe(self, topic: str, value: bytes | None) -> bytes | None:
        """:meth:`frame` for event-loop code: a registry call runs in a thread."""
        if value is not None and not self.ready(topic):
            await asyncio.to_thread(self.schema_id, topic)
        return self.frame(topic, value)


_framers: dict[tuple[str, bool], Framer] = {}
_framers_lock = threading.Lock()


def framer_for(path: str | os.PathLike[str] | None, *, validate: bool = True) -> Framer | None:
    """The process-wide framer for a config path (None: framing off), so that every pipeline or
    model of a process shares one schema-id cache."""
    if not path:
        return None
    key = (str(Path(path).resolve()), validate)
    with _framers_lock:
        framer = _framers.get(key)
        if framer is None:
            framer = _framers[key] = Framer(SchemaRegistryClient(load_config(path)), validate=validate)
        return framer
