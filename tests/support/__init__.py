"""Helpers the tests share: ports, HTTP, CLI runs, topic reads, in-memory Kafka doubles."""
