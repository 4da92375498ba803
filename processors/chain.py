"""The tamper-evident chain over the decisions of one ``lifecycle.events`` partition.

Each decision's ``chain`` field is the SHA-256 (hex) of the previous decision of the same
partition exactly as written, its bytes on the wire (Avro, ciphertext included); the first
decision of a partition chains to the empty string. Bytes as written, not a re-encoding, so
the chain still verifies after data keys are destroyed, and any deleted, reordered or altered
decision breaks the link of the one after it.
"""

from __future__ import annotations

import hashlib

GENESIS = b""


def link(previous: bytes) -> str:
    """The ``chain`` value of the decision that follows ``previous`` (GENESIS for the first)."""
    return hashlib.sha256(previous).hexdigest()
