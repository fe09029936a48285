"""Data-plane gateways between callers, Kafka and Open Inference Protocol servers.

Modules (one concern each):

* ``oip_meta``        server and model metadata the pipeline gateway answers (REST and gRPC).
* ``pipeline_signature`` a pipeline's tensor metadata from its first and last steps' models (pure).
* ``model_metadata``  models' metadata asked of their servers, cached briefly.
* ``pipeline_timeouts`` a pipeline's default request timeout from its spec (windows, model calls)
                      and the ``Seldon-Request-Timeout`` override (pure).
* ``routing``         pure wire rules: routing header -> ``Resource``, composite keys, request ids,
                      which headers cross the gateway, error-message shape.
* ``kafka_io``        ``AsyncProducer`` and ``TopicSetConsumer`` (one consumer per group bucket in use,
                      stopped when its last topic goes).
* ``scheduler_watch`` follow ``SubscribeModelStatus`` / ``SubscribePipelineStatus`` with reconnects;
                      act on the scheduler's Create / Delete instructions and ack each
                      (``PipelineStatusEvent`` / ``ModelStatusEvent``); plain pipeline statuses
                      (``modelsReady``) on a second stream.
* ``pipeline_gateway`` ``PipelineGateway.infer(resource, request_bytes, headers, request_id)``:
                      refuse bad input, produce, wait for the output with the same key, time out;
                      each failure class carries its REST status and gRPC code; readiness (loaded,
                      assigned, step models ready).
* ``pipeline_http`` / ``pipeline_grpc``  REST (aiohttp) and ``inference.GRPCInferenceService`` front ends.
* ``pipeline_service`` ``PipelineGatewayService(PipelineGatewayConfig(...))``: all of the above running.
* ``metrics``         Prometheus metrics with the reference names.
* ``oip_client``      gRPC / REST OIP clients with Go-style error texts (``InferError``).
* ``model_gateway`` / ``model_service``  ``ModelGateway.add_model(name, endpoint)`` / ``remove_model``;
                      ``ModelGatewayService(ModelGatewayConfig(...))`` driven by the scheduler.
* ``batch``           asynchronous batch scoring through a pipeline's topics, resumable.
* ``infer_client``    one REST / gRPC call to the pipeline gateway (the CLI's ``infer``).
* ``mlserver_process`` MLServer as a child process (samples, demo, e2e).

Command line: ``dataflow model-gateway``, ``dataflow pipeline-gateway``, ``dataflow pipeline infer|batch``,
``dataflow model infer``.
"""
