"""Hostile input for ``test_hostile.py``: cases drawn by Hypothesis, and the personal values
planted in them, so that a leak points at the case that leaked.

Each strategy draws the shape of a hostile message (a disguise, a split card number, a bad key,
a cut) as a ``Recipe``; the case is made from it with personal values of its own. ``drawn`` runs
Hypothesis as a generator, because a worker and a broker per example would take hours: one run
against the broker takes all the cases at once. Each run draws new ones; a failure message
names the seed, and ``HOSTILE_SEED=<seed>`` draws the same cases again.
"""

from __future__ import annotations

import base64
import os
import random
import time
import unicodedata
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import orjson
from hypothesis import HealthCheck, Phase, given, seed
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisDeprecationWarning

from schemas import BY_FINGERPRINT, BY_NAME, UPSTREAM_EVENTS
from schemas.codec import MAGIC, encode

SEED = int(os.environ.get("HOSTILE_SEED") or random.randrange(2**32))
NOW = int(time.time() * 1000)
T = TypeVar("T")


def drawn(strategy: st.SearchStrategy[T], count: int) -> list[T]:
    """``count`` examples of a strategy (fewer if it has fewer): Hypothesis as a generator of
    cases for one run against the broker, where a run per example would take hours."""
    out: list[T] = []

    @seed(SEED)
    @hypothesis_settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(example: T) -> None:
        out.append(example)

    with warnings.catch_warnings():
        # Hypothesis blames a strategy when the global random state moves while it draws; a
        # Kafka client's thread left by an earlier test (kafka-python jitters its reconnects
        # with the random module) moves it too, and the draw then failed at random
        warnings.filterwarnings("ignore", "Do not use the `random` module", HypothesisDeprecationWarning)
        collect()
    return out


# --------------------------------------------------------------------------------------
# personal data, and every form a leak of it could take
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    """Personal values unique to one case, so that a leak points at the case that leaked."""

    email: str
    name: str
    phone: str

    @classmethod
    def new(cls, prefix: str, i: int) -> Person:
        tag = uuid.uuid4().hex[:10]
        number = f"{int(tag, 16) % 10**9:09d}"
        email, name = f"{prefix}{i}.{tag}@example.org", f"{prefix.title()} Person {tag}"
        return cls(email, name, f"+44 7{number[:3]} {number[3:]}")

    def fields(self) -> dict[str, str]:
        return {"email": self.email, "name": self.name, "phone": self.phone}

    def values(self) -> list[str]:
        return [self.email, self.name, self.phone]


def forms(secret: bytes) -> set[bytes]:
    """The secret as written, lowercased and in base64: what a scan of raw bytes looks for."""
    out = {secret, secret.lower()}
    if len(secret) >= 8:
        out |= {base64.b64encode(secret).rstrip(b"="), base64.urlsafe_b64encode(secret).rstrip(b"=")}
    return out


# --------------------------------------------------------------------------------------
# hostile messages
# --------------------------------------------------------------------------------------


@dataclass
class Case:
    """One hostile message, what it must be dead-lettered for, and what it must never leak."""

    kind: str
    value: bytes | None
    key: bytes | None
    secrets: tuple[str | bytes, ...] = ()
    reasons: frozenset[str] | None = None  # None: any reason, as long as there is one

    def leak_forms(self) -> set[bytes]:
        """Forms of every secret the published message really holds (a truncated message may
        have lost some); random payloads count as a secret themselves."""
        raw = (self.key or b"") + (self.value or b"")
        out: set[bytes] = set()
        for s in self.secrets:
            b = s.encode() if isinstance(s, str) else s
            if b and b in raw:
                out |= forms(b)
        return out


Recipe = Callable[[int, Person], Case]
"""A drawn shape of hostile message, filled in with one case's own personal values."""


def collected(subject: str, event_id: str, fields: dict[str, str], **changes: Any) -> dict[str, Any]:
    return {
        "type": "DataCollected",
        "event_id": event_id,
        "subject_id": subject,
        "occurred_at": NOW,
        "source": "hostile-test",
        "record_id": "r1",
        "category": "contact",
        "purpose": "inquiry",
        "legal_basis": "legitimate_interest",
        "fields": fields,
        **changes,
    }


def wire(event: dict[str, Any]) -> bytes:
    value = encode(event)
    assert value is not None
    return value


def plain(i: int, p: Person) -> dict[str, Any]:
    """A hostile case's event before it is made hostile: valid, and full of personal data."""
    return collected(f"hx-{i}", f"hx-e{i}", p.fields())


def payload(data: bytes) -> tuple[bytes, ...]:
    """Random bytes as a secret of their own, when varied enough not to turn up by chance (a
    run of zeros is in every topic)."""
    return (data,) if len(data) >= 12 and len(set(data)) >= 8 else ()


def random_bytes() -> st.SearchStrategy[Recipe]:
    return st.binary(max_size=300).map(lambda data: lambda i, p: Case("random bytes", data, f"hx-{i}".encode(), payload(data)))


def behind_a_known_header() -> st.SearchStrategy[Recipe]:
    fingerprints = st.sampled_from(sorted(BY_FINGERPRINT))

    def build(fp: bytes, body: bytes) -> Recipe:
        return lambda i, p: Case("random body behind a known header", MAGIC + fp + body, f"hx-{i}".encode(),
                                 payload(body))  # fmt: skip

    return st.tuples(fingerprints, st.binary(max_size=300)).map(lambda fb: build(*fb))


def truncated() -> st.SearchStrategy[Recipe]:
    def recipe(at: float) -> Recipe:
        def build(i: int, p: Person) -> Case:
            whole = wire(plain(i, p))
            cut = whole[: int(at * len(whole))]
            return Case("truncated", cut, f"hx-{i}".encode(), tuple(p.values()), frozenset({"undecodable"}))

        return build

    return st.floats(0.0, 0.999).map(recipe)


def unknown_fingerprint() -> st.SearchStrategy[Recipe]:
    def build(fp: bytes) -> Recipe:
        return lambda i, p: Case(
            "unknown fingerprint",
            MAGIC + fp + wire(plain(i, p))[10:],
            f"hx-{i}".encode(),
            tuple(p.values()),
            frozenset({"undecodable"}),
        )

    return st.binary(min_size=8, max_size=8).filter(lambda fp: fp not in BY_FINGERPRINT).map(build)


def another_types_fingerprint() -> st.SearchStrategy[Recipe]:
    own = BY_NAME["DataCollected"].fingerprint
    others = sorted(fp for fp in BY_FINGERPRINT if fp != own)

    def build(fp: bytes) -> Recipe:
        return lambda i, p: Case(
            "another type's fingerprint", MAGIC + fp + wire(plain(i, p))[10:], f"hx-{i}".encode(), tuple(p.values())
        )

    return st.sampled_from(others).map(build)


def sample(avro_type: Any, p: Person, name: str = "") -> Any:
    """A value of any Avro type, its strings personal data."""
    if isinstance(avro_type, list):
        return sample(next(t for t in avro_type if t != "null"), p, name)
    if isinstance(avro_type, dict):
        kind = avro_type["type"]
        if kind == "map":
            return {"email": sample(avro_type["values"], p, name)}
        if kind == "array":
            return [sample(avro_type["items"], p, name)]
        if kind == "record":
            return {f["name"]: sample(f["type"], p, f["name"]) for f in avro_type["fields"]}
        avro_type = kind
    return {
        "string": p.email if len(name) % 2 else p.name,
        "long": NOW,
        "int": 7,
        "boolean": True,
        "bytes": p.phone.encode(),
    }[avro_type]


def not_an_upstream_type() -> st.SearchStrategy[Recipe]:
    names = sorted(set(BY_NAME) - set(UPSTREAM_EVENTS))

    def build(name: str) -> Recipe:
        return lambda i, p: Case(
            f"valid {name}",
            wire({"type": name, **sample(BY_NAME[name].parsed, p)}),
            f"hx-{i}".encode(),
            tuple(p.values()),
            frozenset({"unknown_type"}),
        )

    return st.sampled_from(names).map(build)


def huge_field_map() -> st.SearchStrategy[Recipe]:
    def build(n: int) -> Recipe:
        def fill(i: int, p: Person) -> Case:
            fields = {f"f{j}": p.email if j % 2 else p.name for j in range(n)}
            data = wire(collected(f"hx-{i}", f"hx-e{i}", fields))
            return Case(f"{n} fields", data, f"hx-{i}".encode(), tuple(p.values()), frozenset({"too_long"}))

        return fill

    return st.integers(1_001, 5_000).map(build)


# Look-alikes of the Latin letters of SPECIAL_WORDS, by Unicode name: Cyrillic, Greek (capitals
# too), Armenian, Cherokee, Latin small capitals, letterlike symbols and Roman numerals.
# fmt: off
SPECIAL_WORDS = ("health", "religion", "ethnicity", "diagnosis", "political_opinion", "sexual_orientation",
                 "medical_history", "genetic_data", "biometric", "disability", "trade_union")
LOOK_ALIKE_NAMES = {
    "a": ("CYRILLIC SMALL LETTER A", "GREEK SMALL LETTER ALPHA", "LATIN SMALL LETTER ALPHA",
          "LATIN LETTER SMALL CAPITAL A", "GREEK CAPITAL LETTER ALPHA", "CYRILLIC CAPITAL LETTER A", "CHEROKEE LETTER GO"),
    "b": ("GREEK CAPITAL LETTER BETA", "CYRILLIC CAPITAL LETTER VE", "LATIN LETTER SMALL CAPITAL B", "CHEROKEE LETTER YV",
          "CYRILLIC SMALL LETTER SOFT SIGN"),
    "c": ("CYRILLIC SMALL LETTER ES", "GREEK LUNATE SIGMA SYMBOL", "LATIN LETTER SMALL CAPITAL C",
          "CYRILLIC CAPITAL LETTER ES", "CHEROKEE LETTER TLI"),
    "d": ("CYRILLIC SMALL LETTER KOMI DE", "CHEROKEE LETTER A", "LATIN LETTER SMALL CAPITAL D"),
    "e": ("CYRILLIC SMALL LETTER IE", "GREEK SMALL LETTER EPSILON", "LATIN LETTER SMALL CAPITAL E",
          "GREEK CAPITAL LETTER EPSILON", "CYRILLIC CAPITAL LETTER IE", "CHEROKEE LETTER GV"),
    "g": ("LATIN SMALL LETTER SCRIPT G", "ARMENIAN SMALL LETTER CO", "LATIN LETTER SMALL CAPITAL G", "CHEROKEE LETTER NAH"),
    "h": ("CYRILLIC SMALL LETTER SHHA", "ARMENIAN SMALL LETTER HO", "LATIN LETTER SMALL CAPITAL H",
          "GREEK CAPITAL LETTER ETA", "CYRILLIC CAPITAL LETTER EN", "CHEROKEE LETTER MI", "PLANCK CONSTANT"),
    "i": ("CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I", "GREEK SMALL LETTER IOTA", "LATIN SMALL LETTER DOTLESS I",
          "LATIN LETTER SMALL CAPITAL I", "GREEK CAPITAL LETTER IOTA", "CYRILLIC CAPITAL LETTER BYELORUSSIAN-UKRAINIAN I",
          "SMALL ROMAN NUMERAL ONE", "CHEROKEE LETTER V"),
    "l": ("CYRILLIC SMALL LETTER PALOCHKA", "LATIN LETTER SMALL CAPITAL L", "CHEROKEE LETTER TLE", "SMALL ROMAN NUMERAL FIFTY"),
    "m": ("CYRILLIC SMALL LETTER EM", "LATIN LETTER SMALL CAPITAL M", "GREEK CAPITAL LETTER MU",
          "CYRILLIC CAPITAL LETTER EM", "CHEROKEE LETTER LU"),
    "n": ("ARMENIAN SMALL LETTER VO", "LATIN LETTER SMALL CAPITAL N", "GREEK CAPITAL LETTER NU"),
    "o": ("CYRILLIC SMALL LETTER O", "GREEK SMALL LETTER OMICRON", "ARMENIAN SMALL LETTER OH",
          "LATIN LETTER SMALL CAPITAL O", "GREEK CAPITAL LETTER OMICRON", "CYRILLIC CAPITAL LETTER O"),
    "p": ("CYRILLIC SMALL LETTER ER", "GREEK SMALL LETTER RHO", "LATIN LETTER SMALL CAPITAL P",
          "GREEK CAPITAL LETTER RHO", "CYRILLIC CAPITAL LETTER ER", "CHEROKEE LETTER TLV"),
    "r": ("CYRILLIC SMALL LETTER GHE", "LATIN LETTER SMALL CAPITAL R", "CHEROKEE LETTER SV"),
    "s": ("CYRILLIC SMALL LETTER DZE", "LATIN LETTER SMALL CAPITAL S", "CYRILLIC CAPITAL LETTER DZE", "CHEROKEE LETTER DU"),
    "t": ("CYRILLIC SMALL LETTER TE", "LATIN LETTER SMALL CAPITAL T", "GREEK CAPITAL LETTER TAU",
          "CYRILLIC CAPITAL LETTER TE", "CHEROKEE LETTER I"),
    "u": ("GREEK SMALL LETTER UPSILON", "ARMENIAN SMALL LETTER SEH", "LATIN LETTER SMALL CAPITAL U"),
    "x": ("CYRILLIC SMALL LETTER HA", "GREEK SMALL LETTER CHI", "GREEK CAPITAL LETTER CHI", "CYRILLIC CAPITAL LETTER HA"),
    "y": ("CYRILLIC SMALL LETTER U", "LATIN LETTER SMALL CAPITAL Y", "GREEK CAPITAL LETTER UPSILON",
          "CYRILLIC CAPITAL LETTER STRAIGHT U", "CHEROKEE LETTER GI"),
}
# fmt: on
LOOK_ALIKES = {c: tuple(unicodedata.lookup(n) for n in names) for c, names in LOOK_ALIKE_NAMES.items()}
INVISIBLE = (
    "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u200e", "\u200f", "\u061c", "\u2062", "\u2063",
    "\u2064", "\u180e", "\u034f", "\ufe0f", "\u3164", "\uffa0", "\U000e0020",
    "\u202a", "\u202b", "\u202c", "\u2066", "\u2067", "\u2068", "\u2069",
)  # fmt: skip
BIDI = frozenset("\u202a\u202b\u202c\u2066\u2067\u2068\u2069")
COMBINING = ("\u0300", "\u0301", "\u0308", "\u030c", "\u0323", "\u0327", "\u0331", "\u0336", "\u0338")
RLO, PDF = "\u202e", "\u202c"


@st.composite
def disguised_names(draw: st.DrawFn) -> str:
    """A special-category word as someone dodging a word list types it: look-alike letters,
    fullwidth and bold letters, invisible characters and combining marks between letters, or
    stored backwards behind a right-to-left override so that it reads right on screen."""
    word = draw(st.sampled_from(SPECIAL_WORDS)).replace("_", draw(st.sampled_from(["_", "-", ".", " ", ""])))
    out = []
    for c in word:
        how = draw(st.sampled_from(["keep", "keep", "look-alike", "fullwidth", "bold", "upper"]))
        if how == "look-alike" and c in LOOK_ALIKES:
            c = draw(st.sampled_from(LOOK_ALIKES[c]))
        elif how == "fullwidth" and "!" <= c <= "~":
            c = chr(ord(c) + 0xFEE0)
        elif how == "bold" and "a" <= c <= "z":
            c = chr(0x1D41A + ord(c) - ord("a"))
        elif how == "upper":
            c = c.upper()
        out.append(c)
        if draw(st.integers(0, 5)) == 0:
            out.append(draw(st.sampled_from(INVISIBLE)))
        if draw(st.integers(0, 5)) == 0:
            out.append(draw(st.sampled_from(COMBINING)))
    name = "".join(out)
    if draw(st.integers(0, 3)) == 0:
        inner = "".join(c for c in name if c not in BIDI)  # another control would end the override
        name = RLO + inner[::-1] + draw(st.sampled_from(["", PDF]))
    return name


def disguised_field_name() -> st.SearchStrategy[Recipe]:
    def build(name: str) -> Recipe:
        def fill(i: int, p: Person) -> Case:
            fields = {**p.fields(), name: f"{p.name}: asthma"}
            return Case(f"disguised name {name!a}", wire(collected(f"hx-{i}", f"hx-e{i}", fields)),
                        f"hx-{i}".encode(), tuple(p.values()), frozenset({"special_category"}))  # fmt: skip

        return fill

    return disguised_names().map(build)


CARD_PREFIXES = ("4", "51", "52", "53", "54", "55", "2221", "34", "37", "6011", "65", "35", "36")
SEPARATORS = (" ", "-", ".", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u00a0",
              "\u2013", "\u2011", " - ", "  ", ". ", "\u3164")  # fmt: skip


def luhn_complete(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        n = int(ch)
        if i % 2 == 0:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return body + str((10 - total % 10) % 10)


@st.composite
def cards(draw: st.DrawFn, separators: tuple[str, ...] = SEPARATORS, fullwidth: bool = True) -> tuple[str, str]:
    """(as written, digits only): a Luhn-valid card number in random groups and separators."""
    prefix = draw(st.sampled_from(CARD_PREFIXES))
    length = draw(st.integers(13, 19))
    rest = draw(st.text("0123456789", min_size=length - 1 - len(prefix), max_size=length - 1 - len(prefix)))
    digits = luhn_complete(prefix + rest)
    out, i = [], 0
    while i < len(digits):
        size = draw(st.integers(1, 6))
        out.append(digits[i : i + size])
        i += size
        if i < len(digits):
            out.append(draw(st.sampled_from(separators)))
    written = "".join(out)
    if fullwidth and draw(st.integers(0, 4)) == 0:
        written = "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in written)
    return written, digits


def split_card(where: str) -> st.SearchStrategy[Recipe]:
    """A card number in a value, a field name, the source, or an id (where the contract allows
    only ASCII dashes and dots between its groups)."""
    in_an_id = where.endswith("_id")

    def build(card: tuple[str, str]) -> Recipe:
        written, digits = card

        def fill(i: int, p: Person) -> Case:
            event = plain(i, p)
            reasons = {"payment_card"}
            if where == "value":
                event["fields"]["note"] = f"please charge {written} thanks"
            elif where == "field name":
                event["fields"][written] = p.name
            elif where == "source":
                event["source"] = f"card {written}"
            else:
                event[where] = written
                if where == "subject_id":  # a 13 to 15 digit one reads as a phone number first
                    reasons.add("subject_id_is_contact_data")
            return Case(f"card in {where}: {written!a}", wire(event), event["subject_id"].encode(),
                        (*p.values(), written, digits), frozenset(reasons))  # fmt: skip

        return fill

    return (cards((".", "-"), fullwidth=False) if in_an_id else cards()).map(build)


def wrong_key() -> st.SearchStrategy[Recipe]:
    def build(how: str) -> Recipe:
        def fill(i: int, p: Person) -> Case:
            key = {
                "no key": None,
                "another subject": f"hx-{i + 1}".encode(),
                "an email": p.email.encode(),
                "another case": f"HX-{i}".encode(),
                "a trailing space": f"hx-{i} ".encode(),
                "empty": b"",
            }[how]
            reason = "missing_key" if key is None else "key_mismatch"
            return Case(f"keyed by {how}", wire(plain(i, p)), key, tuple(p.values()), frozenset({reason}))

        return fill

    hows = ["no key", "another subject", "an email", "another case", "a trailing space", "empty"]
    return st.sampled_from(hows).map(build)


def subject_is_contact_data() -> st.SearchStrategy[Recipe]:
    def fill(i: int, p: Person) -> Case:
        event = {**plain(i, p), "subject_id": p.email}
        return Case("subject_id is an email", wire(event), p.email.encode(), tuple(p.values()),
                    frozenset({"subject_id_is_contact_data"}))  # fmt: skip

    return st.just(fill)


DRAWS: list[tuple[Callable[[], st.SearchStrategy[Recipe]], int]] = [
    (random_bytes, 30),
    (behind_a_known_header, 30),
    (truncated, 25),
    (unknown_fingerprint, 10),
    (another_types_fingerprint, 15),
    (not_an_upstream_type, 15),
    (huge_field_map, 6),
    (disguised_field_name, 60),
    *((partial(split_card, where), 12) for where in ("value", "field name", "source", "event_id", "record_id")),
    (partial(split_card, "subject_id"), 6),
    (wrong_key, 12),
    (subject_is_contact_data, 1),
]


def fixed_cases(limit: int) -> list[Recipe]:
    """The cases every run has: empty and null values, and three sizes close to ``limit``, the
    largest message the broker takes: random bytes, a known header with junk, and a valid
    event that a contract allowing 1,000 fields of 64 KiB each lets through but that no longer
    fits in a Kafka message once its fields are sealed."""
    near = limit - 4096

    def random_near_the_limit(i: int, p: Person) -> Case:
        junk = os.urandom(near)
        return Case("random bytes near the limit", junk, f"hx-{i}".encode(), (junk[:64],))

    def header_and_junk_near_the_limit(i: int, p: Person) -> Case:
        junk = os.urandom(near)
        data = MAGIC + BY_NAME["DataCollected"].fingerprint + junk
        return Case("known header, junk near the limit", data, f"hx-{i}".encode(), (junk[:64],))

    def valid_near_the_limit(i: int, p: Person) -> Case:
        value = (p.name + " ") * (60_000 // (len(p.name) + 1))
        event, fields = collected(f"hx-{i}", f"hx-e{i}", {}), {}
        while len(wire({**event, "fields": {**fields, f"f{len(fields)}": value}})) < near:
            fields[f"f{len(fields)}"] = value
        data = wire({**event, "fields": fields})
        return Case(f"valid, {len(data):,} bytes", data, f"hx-{i}".encode(), tuple(p.values()),
                    frozenset({"too_large"}))  # fmt: skip

    return [
        lambda i, p: Case("empty value", b"", f"hx-{i}".encode(), (), frozenset({"undecodable"})),
        lambda i, p: Case("null value", None, f"hx-{i}".encode(), (), frozenset({"not_an_object"})),
        random_near_the_limit,
        header_and_junk_near_the_limit,
        valid_near_the_limit,
    ]


def hostile_cases(limit: int) -> list[Case]:
    """Every hostile message of one run: the fixed cases, then those Hypothesis draws."""
    recipes = fixed_cases(limit)
    for strategy, count in DRAWS:
        recipes += drawn(strategy(), count)
    return [recipe(i, Person.new("hx", i)) for i, recipe in enumerate(recipes)]


# --------------------------------------------------------------------------------------
# hostile lines for lifecycle publish
# --------------------------------------------------------------------------------------


def good_line(n: int, p: Person) -> dict[str, Any]:
    return {
        "type": "DataCollected", "event_id": f"L{n}", "subject_id": f"s-{n}", "occurred_at": "2026-03-01T10:00:00Z",
        "source": "hostile-test", "record_id": "r1", "category": "contact", "purpose": "inquiry",
        "legal_basis": "legitimate_interest", "fields": p.fields(),
    }  # fmt: skip


@st.composite
def bad_lines(draw: st.DrawFn) -> Callable[[int, Person], bytes]:
    """A line ``lifecycle publish`` must report: not JSON, not an object, the wrong types, an
    unknown type, a missing or extra field, invalid UTF-8, a NUL byte."""
    kind = draw(st.sampled_from(["bytes", "text", "truncated", "not an object", "wrong type", "unknown type",
                                 "missing field", "extra field", "invalid utf-8", "nul"]))  # fmt: skip
    junk = draw(st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"")))
    text = draw(st.text(max_size=80).map(lambda t: t.replace("\n", "").replace("\r", "")))
    field = draw(st.sampled_from(["event_id", "subject_id", "occurred_at", "record_id", "category", "fields", "source"]))
    # JSON numbers as upstream systems write them: orjson (and most encoders) stop at 64 bits,
    # so a larger integer could not be the line under test at all
    ints = st.integers(-(2**63), 2**63 - 1)
    scalars = st.one_of(ints, st.floats(allow_nan=False), st.booleans(), st.none())
    other = draw(st.one_of(scalars, st.lists(ints, max_size=3)))
    not_upstream = sorted(set(BY_NAME) - set(UPSTREAM_EVENTS))
    unknown = draw(st.sampled_from([*not_upstream, "dataCollected", "Data Collected", ""]))
    cut = draw(st.floats(0.05, 0.95))

    def build(n: int, p: Person) -> bytes:
        event = good_line(n, p)
        line = orjson.dumps(event)
        if kind == "bytes":
            return b"{" + junk + p.email.encode()
        if kind == "text":
            return ("[" + text + p.name).encode()
        if kind == "truncated":
            return line[: int(len(line) * cut)]
        if kind == "not an object":
            return orjson.dumps([event])
        if kind == "wrong type":
            return orjson.dumps({**event, field: other if field != "fields" else [p.email]})
        if kind == "unknown type":
            return orjson.dumps({**event, "type": unknown})
        if kind == "missing field":
            return orjson.dumps({k: v for k, v in event.items() if k != field})
        if kind == "extra field":
            return orjson.dumps({**event, "email": p.email})
        if kind == "invalid utf-8":
            return line.replace(b"example", b"ex\xffample")
        return line.replace(b"hostile-test", b"hostile\x00test")

    return build
