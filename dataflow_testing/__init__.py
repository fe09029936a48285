"""Test support and test doubles: what our tests and benchmarks (and a user's own tests) use in
place of the real thing. Product packages (``dataflow``, ``gateways``, ``scheduler_min``,
``dataflow_cli``) never import it (checked by the import contracts in ``pyproject.toml``).

* ``driver``          ``PipelineTestDriver``: run compiled pipelines end to end without Kafka.
* ``kafka_env``       a Kafka for a test session (embedded broker or ``DATAFLOW_TEST_KAFKA``),
                      unique topics and groups.
* ``fake_chainer``    ``FakeChainer``: the scheduler's Chainer service, in process, driving engines.
* ``fake_engine``     ``FakeEngine``: a dataflow engine that subscribes to a scheduler and acks.
* ``faust_factories`` tiny pipelines a Faust worker can build by dotted path (runtime tests).
"""
