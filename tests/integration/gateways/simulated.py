"""A stand-in for the dataflow engine: copies ``pipeline.<p>.inputs`` -> ``pipeline.<p>.outputs``.

Each request becomes a response whose outputs are the inputs (``OUT_`` prefixed), same key and
partition, headers kept plus ``x-pipeline-version``. A request with parameter ``fail`` becomes an
error record (``seldon-pipeline-errors: <model>``), one with parameter ``drop`` gets no answer.
With ``delay_s`` each answer is written that long after its request arrived (a pipeline that
answers when a join window closes).
"""
from __future__ import annotations

import threading
import time

from confluent_kafka import Consumer, Producer
from tritonclient.grpc import service_pb2 as pb

from dataflow import headers as H
from gateways.kafka_io import poll_batch


def request_to_response(req: pb.ModelInferRequest, model: str = "sim") -> pb.ModelInferResponse:
    resp = pb.ModelInferResponse(model_name=model, model_version="1", id=req.id)
    for t in req.inputs:
        o = resp.outputs.add(name="OUT_" + t.name, datatype=t.datatype, shape=t.shape)
        if t.HasField("contents"):
            o.contents.CopyFrom(t.contents)
        for k, v in t.parameters.items():
            o.parameters[k].CopyFrom(v)
    resp.raw_output_contents.extend(req.raw_input_contents)
    return resp


class SimulatedPipeline:
    """One stand-in for ``in_topic`` -> ``out_topic``; ``routes`` (input -> output topic) serves
    many pipelines with one consumer."""

    def __init__(self, kafka, in_topic: str | None = None, out_topic: str | None = None, *, model: str = "sim",
                 routes: dict[str, str] | None = None, delay_s: float = 0.0) -> None:
        self.kafka = kafka
        self.delay_s = delay_s
        self._due: list[tuple[float, dict]] = []  # (when, produce kwargs) of delayed answers
        self.routes = dict(routes or {})
        if in_topic is not None:
            self.routes[in_topic] = out_topic
        self.in_topic, self.out_topic, self.model = in_topic, out_topic, model
        self.seen = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SimulatedPipeline:
        self._thread.start()
        assert self._ready.wait(30), "simulated pipeline consumer got no assignment"
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        consumer: Consumer = self.kafka.consumer(offset_reset="earliest")
        producer: Producer = self.kafka.producer(**{"message.max.bytes": 1_000_000_000})  # as the engine's
        consumer.subscribe(sorted(self.routes), on_assign=lambda c, p: self._ready.set())
        try:
            while not self._stop.is_set():
                for m in poll_batch(consumer, 500, 0.05):
                    if m.error():
                        continue
                    self.seen += 1
                    req = pb.ModelInferRequest()
                    req.ParseFromString(m.value())
                    headers = [(k, v) for k, v in (m.headers() or []) if k != H.PIPELINE_VERSION]
                    headers.append((H.PIPELINE_VERSION, b"1"))
                    if "drop" in req.parameters:
                        continue
                    if "fail" in req.parameters:
                        value = f"rpc error: code = InvalidArgument desc = {req.parameters['fail'].string_param}"
                        headers.append((H.PIPELINE_ERRORS, self.model.encode()))
                        producer.produce(self.routes[m.topic()], value=value.encode(), key=m.key(),
                                         partition=m.partition(), headers=headers)
                        continue
                    answer = dict(topic=self.routes[m.topic()],
                                  value=request_to_response(req, self.model).SerializeToString(),
                                  key=m.key(), partition=m.partition(), headers=headers)
                    self._due.append((time.monotonic() + self.delay_s, answer))
                now = time.monotonic()
                for _when, answer in [d for d in self._due if d[0] <= now]:
                    producer.produce(**answer)
                self._due = [d for d in self._due if d[0] > now]
                producer.poll(0)
        finally:
            producer.flush(5)
            consumer.close()
