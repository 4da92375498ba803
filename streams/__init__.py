"""Kafka plumbing and the command line: everything that touches a broker or a terminal."""
