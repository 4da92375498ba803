"""The admin clients, built in one place with the project's identity and security.

Two libraries, two clients: kafka-python's (topics, ACLs, group offsets: the simple calls) and
librdkafka's (group descriptions and topic configs, which kafka-python 3.0 answers only in
raw protocol structures). Either is built here from the settings, so every caller connects as
the same principal over the same protocol, and a forgotten option cannot look like a dead
broker (``streams.plumbing.security``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from streams.plumbing.logsafe import librdkafka_logger
from streams.plumbing.security import client_kwargs, librdkafka_security
from streams.settings import Settings


def admin_client(bootstrap: str, client: dict[str, Any] | None = None, client_id: str = "lifecycle-admin", **options: Any) -> Any:
    """kafka-python's admin client for ``bootstrap`` with security options ``client``."""
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id=client_id, **(client or {}), **options)


def admin(settings: Settings, client_id: str = "lifecycle-admin", **options: Any) -> Any:
    """kafka-python's admin client, as the settings' principal."""
    return admin_client(settings.bootstrap, client_kwargs(settings), client_id, **options)


@contextmanager
def opened(settings: Settings, client_id: str = "lifecycle-admin", **options: Any) -> Iterator[Any]:
    """``admin`` for the length of a ``with`` block, closed however it ends."""
    client = admin(settings, client_id, **options)
    try:
        yield client
    finally:
        client.close()


def cluster_admin(settings: Settings) -> Any:
    """librdkafka's admin client, as the settings' principal (group descriptions, configs)."""
    from confluent_kafka.admin import AdminClient

    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap,
        "logger": librdkafka_logger(),
        **librdkafka_security(settings),
    }
    return AdminClient(config)


def check_topic_access(bootstrap: str, topic: str, client: dict[str, Any]) -> None:
    """Raise TopicAuthorizationFailedError when this principal may not see ``topic``.

    Why: Kafka hides a topic from a principal without DESCRIBE on it, so a consumer finds no
    partitions, exactly as for a missing topic. Reading "nothing" there must not pass for an
    empty topic (a replay would take every data key for destroyed), so a secured reader that
    found no partitions asks which it is. Nothing to ask on PLAINTEXT: there are no ACLs.
    """
    if not client:
        return
    from kafka.errors import TopicAuthorizationFailedError

    client_ = admin_client(bootstrap, client, "lifecycle-access")
    try:
        described = client_.describe_topics([topic])
    finally:
        client_.close()
    if any(t.get("error_code") == TopicAuthorizationFailedError.errno for t in described):
        raise TopicAuthorizationFailedError(topic)


__all__ = ["admin", "admin_client", "check_topic_access", "cluster_admin", "opened"]
