"""Crypto-shredding: what an erasure does to the ciphertext in the log, without a broker.

Two halves: the cipher layer (wrapping, rotation, sealing and opening fields, a destroyed key
reading as ``[erased]``), and the fold's bookkeeping of which data keys an erasure, an expiry,
a refusal or a rectification destroys.
"""

from __future__ import annotations

import os

import pytest

from processors import envelope
from processors.fold import Decision, RecordChange, apply, new_state
from processors.policy import Policy
from processors.shredding import (
    KeyCache,
    Keyring,
    KeyringError,
    key_id_for,
    master_key_id,
    new_data_key,
    open_field,
    open_fields,
    seal_fields,
)
from streams.settings import load_policy

DAY = 86_400_000
T0 = 1_705_312_800_000  # 2024-01-15T10:00:00Z
PERSONAL = {"email": "ada@example.org", "name": "Ada Lovelace", "phone": "+44 20 7946 0001"}


# -- the cipher layer -------------------------------------------------------------------


def test_sealed_fields_keep_their_names_and_hide_their_values() -> None:
    key = new_data_key()
    sealed = seal_fields(PERSONAL, "s-1/e-1", key)
    assert set(sealed) == set(PERSONAL)
    for name, value in sealed.items():
        assert value.startswith(envelope.PREFIX)
        assert PERSONAL[name] not in value
        assert envelope.key_of(value) == "s-1/e-1"
    assert open_fields(sealed, {"s-1/e-1": key}.get) == PERSONAL


def test_a_destroyed_key_reads_as_erased_and_raises_nothing() -> None:
    sealed = seal_fields(PERSONAL, "s-1/e-1", new_data_key())
    assert open_fields(sealed, lambda _kid: None) == dict.fromkeys(PERSONAL, "[erased]")


def test_a_ciphertext_moved_to_another_field_or_key_does_not_open() -> None:
    key = new_data_key()
    sealed = seal_fields(PERSONAL, "s-1/e-1", key)
    assert open_field("name", sealed["email"], {"s-1/e-1": key}.get) == "[erased]"
    wrong = new_data_key()
    assert open_field("email", sealed["email"], lambda _kid: wrong) == "[erased]"


def test_plaintext_and_malformed_envelopes_pass_or_read_as_erased() -> None:
    assert open_field("email", "plain", lambda _kid: None) == "plain"
    assert envelope.key_of("enc1:!!!:???") is None
    assert envelope.keys_of({"a": "plain", "b": "enc1:"}) == set()


def test_wrapping_binds_the_key_id_and_names_the_master_key() -> None:
    ring = Keyring.of(os.urandom(32))
    data_key = new_data_key()
    wrapped, master = ring.wrap("s-1/e-1", data_key)
    assert master == ring.current and data_key not in wrapped
    assert ring.unwrap("s-1/e-1", wrapped, master) == data_key
    with pytest.raises(KeyringError, match="does not open"):
        ring.unwrap("s-2/e-9", wrapped, master)  # passed off as another subject's key


def test_rotation_rewraps_with_the_new_key_and_keeps_old_data_readable() -> None:
    old, new = os.urandom(32), os.urandom(32)
    before = Keyring.of(old)
    data_key = new_data_key()
    sealed = seal_fields(PERSONAL, "s-1/e-1", data_key)
    wrapped, wrapped_by = before.wrap("s-1/e-1", data_key)

    during = Keyring.of(new, old)  # the new key is current, the old one still unwraps
    rewrapped, rewrapped_by = during.wrap("s-1/e-1", during.unwrap("s-1/e-1", wrapped, wrapped_by))
    assert rewrapped_by == master_key_id(new) != wrapped_by

    after = Keyring.of(new)  # the old master key can now be thrown away
    opened = after.unwrap("s-1/e-1", rewrapped, rewrapped_by)
    assert open_fields(sealed, {"s-1/e-1": opened}.get) == PERSONAL
    with pytest.raises(KeyringError, match="lacks"):
        after.unwrap("s-1/e-1", wrapped, wrapped_by)


def test_key_cache_is_bounded_and_forgets_destroyed_keys() -> None:
    cache = KeyCache(limit=2)
    cache.put("a", b"1")
    cache.put("b", b"2")
    cache.put("c", b"3")
    assert cache.get("a") is None and cache.get("c") == b"3"
    cache.forget("c")
    assert cache.get("c") is None


# -- the fold's key bookkeeping ----------------------------------------------------------


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


class Sealed:
    """A subject whose personal fields arrive sealed, as the guard writes them to the log."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.state = new_state("s-1")
        self.n = 0
        self.keys: dict[str, bytes] = {}

    def send(self, typ: str, at: int, **kw: object) -> list:
        self.n += 1
        eid = f"e-{self.n}"
        if "fields" in kw:
            kid = key_id_for("s-1", eid)
            self.keys[kid] = new_data_key()
            kw["fields"] = seal_fields(kw["fields"], kid, self.keys[kid])  # type: ignore[arg-type]
        ev = {"type": typ, "event_id": eid, "subject_id": "s-1", "occurred_at": at, "source": "test", **kw}
        return apply(self.state, ev, at, self.policy)[1]

    def collect(
        self, at: int, rid: str, category: str = "contact", purpose: str = "inquiry", basis: str = "legitimate_interest"
    ) -> str:
        self.send(
            "DataCollected", at, record_id=rid, category=category, purpose=purpose, legal_basis=basis, fields=dict(PERSONAL)
        )
        return key_id_for("s-1", f"e-{self.n}")

    def erase(self, at: int) -> dict:
        self.send("ErasureRequested", at, request_id="q-1")
        outs = self.send("IdentityVerified", at + 1, request_id="q-1", method="email_link")
        return next(o.event for o in outs if isinstance(o, Decision) and o.event["type"] == "ErasureExecuted")


def test_erasure_destroys_every_key_of_the_erased_records(policy: Policy) -> None:
    s = Sealed(policy)
    k1, k2 = s.collect(T0, "r-1"), s.collect(T0 + DAY, "r-2")
    done = s.erase(T0 + 2 * DAY)
    assert done["keys_destroyed"] == sorted([k1, k2])
    assert s.state["keys"] == {}


def test_a_recollected_records_old_key_goes_with_the_erasure(policy: Policy) -> None:
    s = Sealed(policy)
    old = s.collect(T0, "r-1")
    new = s.collect(T0 + DAY, "r-1")  # same record again: the first values are no longer live
    assert s.erase(T0 + 2 * DAY)["keys_destroyed"] == sorted([old, new])


def test_records_under_a_tax_obligation_keep_their_key_until_it_ends(policy: Policy) -> None:
    s = Sealed(policy)
    contact = s.collect(T0, "r-1")
    invoice = s.collect(T0, "r-inv", category="billing", purpose="invoicing", basis="legal_obligation")
    assert s.erase(T0 + DAY)["keys_destroyed"] == [contact]
    assert invoice in s.state["keys"]
    deadline = s.state["records"]["r-inv"]["retention_deadline"]
    outs = apply(s.state, {"type": "Tick", "subject_id": "s-1"}, deadline, policy)[1]
    expired = next(o.event for o in outs if isinstance(o, Decision))
    assert expired["type"] == "RetentionExpired" and expired["keys_destroyed"] == [invoice]


def test_expiry_destroys_only_the_expired_records_key(policy: Policy) -> None:
    s = Sealed(policy)
    first = s.collect(T0, "r-1")
    later = s.collect(T0 + 100 * DAY, "r-2")
    deadline = s.state["records"]["r-1"]["retention_deadline"]
    outs = apply(s.state, {"type": "Tick", "subject_id": "s-1"}, deadline, policy)[1]
    assert [o.record_id for o in outs if isinstance(o, RecordChange)] == ["r-1"]
    (expired,) = [o.event for o in outs if isinstance(o, Decision)]
    assert expired["keys_destroyed"] == [first]
    assert later in s.state["keys"]


def test_a_refused_collection_destroys_its_key_at_once(policy: Policy) -> None:
    s = Sealed(policy)
    outs = s.send(
        "DataCollected",
        T0,
        record_id="r-1",
        category="contact",
        purpose="newsletter",
        legal_basis="consent",
        fields=dict(PERSONAL),
    )
    (refusal,) = [o.event for o in outs if isinstance(o, Decision)]
    assert refusal["reason"] == "no_consent"
    assert refusal["keys_destroyed"] == [key_id_for("s-1", "e-1")]


def test_a_rectification_that_replaces_every_value_destroys_the_old_key(policy: Policy) -> None:
    s = Sealed(policy)
    old = s.collect(T0, "r-1")
    s.send("RectificationRequested", T0 + DAY, request_id="q-r", record_id="r-1", fields=dict(PERSONAL))
    outs = s.send("IdentityVerified", T0 + DAY + 1, request_id="q-r", method="email_link")
    (done,) = [o.event for o in outs if isinstance(o, Decision)]
    assert done["type"] == "RequestFulfilled" and done["keys_destroyed"] == [old]
    assert set(s.state["keys"]) == {key_id_for("s-1", "e-2")}


def test_a_recorded_erasure_read_back_leaves_the_same_keys_as_the_live_fold(policy: Policy) -> None:
    live = Sealed(policy)
    live.collect(T0, "r-1")
    live.collect(T0, "r-2")
    live.send("ErasureRequested", T0 + DAY, request_id="q-1")
    decision = live.erase(T0 + DAY)  # second request id is a duplicate; the first erases
    other = new_state("s-1")
    for ev in [
        {"type": "ErasureExecuted", **{k: v for k, v in decision.items() if k != "type"}},
    ]:
        apply(other, ev, ev["occurred_at"], policy)
    assert other["keys"] == {} and live.state["keys"] == {}
