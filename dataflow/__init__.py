"""dataflow-engine: a Python dataflow engine for Seldon Core 2 inference pipelines over Kafka."""
__version__ = "0.1.0"
