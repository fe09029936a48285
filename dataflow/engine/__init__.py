"""The dataflow engine process: Chainer client, pipeline lifecycle, runners.

Public API: ``EngineConfig`` (settings), ``Engine(config).run()`` (serve until ``request_stop()``),
``PipelineManager`` (Create/Delete task queues + acks), ``ChainerClient`` (subscription + acks).
"""
from dataflow.engine.app import Engine
from dataflow.engine.chainer_client import ChainerClient
from dataflow.engine.config import ConfigError, EngineConfig
from dataflow.engine.lifecycle import PipelineManager

__all__ = ["ChainerClient", "ConfigError", "Engine", "EngineConfig", "PipelineManager"]
