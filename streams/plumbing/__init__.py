"""Kafka plumbing every client shares: who it is (security), the topics and their promises,
reading topics back, the worker group's description, keeping payloads out of logs, and the
upstream producer. Nothing here knows the worker or a command; they build on it."""
