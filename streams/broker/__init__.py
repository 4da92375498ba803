"""The local Apache Kafka: a KRaft node from the jars on Maven Central (``local``), its TLS
material (``tls``), access control (``acls``) and the same config for docker-compose
(``compose``)."""
