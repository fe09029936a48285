"""Runtimes that run a compiled pipeline version on Kafka (Faust; a raw confluent-kafka loop)."""
