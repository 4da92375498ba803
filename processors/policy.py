"""The privacy policy as data: one TOML file, validated once, then read by the guard and the fold.

Why a file and not constants: privacy engineers change purposes, retention periods and
consumers without touching the code, and an auditor reads the very rules that ran. Why the
strict validation: a misspelt data category or an unknown legal basis would otherwise widen
what the pipeline accepts without anyone noticing, so every name is checked against the Fides
taxonomy that ``fideslang`` ships and every error names the offending key. The lexicon the
guard reads free text against lives here too, checked term by term when the file is read: a
term that could never match would be a hole in the screen that no test of the code shows.

Calendar arithmetic lives here too (``add_months``): retention and request deadlines are
"N calendar months later" on UTC dates, computed from integer epoch milliseconds without
reading any clock, so live runs and replays agree to the millisecond.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any

import orjson

from processors.guard import Lexicon, lexicon_term
from schemas.contract import CATEGORIES, LEGAL_BASES, RELATIONSHIP_KINDS

FORBIDDEN_KINDS = ("profiling", "automated_decision", "sale")
CONSUMER_ROLES = ("processor", "controller")
DIRECT_MARKETING_BASES = ("consent", "legitimate_interest")
"""The bases direct marketing can rest on: a contract or a legal obligation never requires it."""

TRANSFER_SAFEGUARDS = (
    "adequacy_decision",
    "standard_contractual_clauses",
    "binding_corporate_rules",
    "eu_us_data_privacy_framework",
)
"""GDPR chapter V's safeguards for data kept outside the EEA, as the policy names them."""
EU = "eu"
"""The jurisdiction (first part of a consumer's region) of the EEA: no transfer to safeguard."""
ADEQUATE = frozenset({"ad", "ar", "ca", "ch", "fo", "gg", "il", "im", "je", "jp", "kr", "nz", "uk", "uy"})
"""Jurisdictions with an adequacy decision of the European Commission (art. 45); the US has one
only for organisations certified under the EU-US Data Privacy Framework."""

REGIMES: Mapping[str, int | None] = MappingProxyType({"gdpr": None, "uk_gdpr": None, "us_state_privacy": 90})
"""Privacy regimes a policy may name, with the most days a request may take under each once
extended (None: the months of ``[requests]`` are the regime's own rule)."""

DAY_MS = 86_400_000


class PolicyError(ValueError):
    """The policy file cannot be used; the message starts with the dotted key at fault."""


# --------------------------------------------------------------------------------------
# calendar arithmetic (pure, cached per day so the fold's hot path stays cheap)
# --------------------------------------------------------------------------------------


def _civil_from_days(z: int) -> tuple[int, int, int]:
    # H. Hinnant's days->civil: exact for the proleptic Gregorian calendar, integers only.
    z += 719_468
    era = (z if z >= 0 else z - 146_096) // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + 1 if m <= 2 else y), m, d


def civil_date(ms: int) -> tuple[int, int, int]:
    """(year, month, day) of an epoch-milliseconds instant, on the UTC calendar."""
    return _civil_from_days(ms // DAY_MS)


def _days_from_civil(y: int, m: int, d: int) -> int:
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def _month_length(y: int, m: int) -> int:
    if m == 2:
        return 29 if (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)) else 28
    return 30 if m in (4, 6, 9, 11) else 31


def _add_months_days(days: int, months: int) -> int:
    y, m, d = _civil_from_days(days)
    total = y * 12 + (m - 1) + months
    y, m = divmod(total, 12)
    m += 1
    return _days_from_civil(y, m, min(d, _month_length(y, m)))


# months -> {day number -> day number `months` later}. Events cluster on few days, so a
# plain dict beats recomputing (and beats lru_cache's tuple keys) on the fold's hot path.
_MONTH_CACHE: dict[int, dict[int, int]] = {}
_MONTH_CACHE_LIMIT = 1 << 17


def month_table(months: int) -> dict[int, int]:
    """The memo ``add_months`` keeps for ``months`` (UTC day number -> day number later).

    Exposed so the fold's hot path can try it before paying for a call; read it, never write it.
    """
    cache = _MONTH_CACHE.get(months)
    if cache is None:
        cache = _MONTH_CACHE[months] = {}
    return cache


def add_months(ms: int, months: int) -> int:
    """``ms`` plus ``months`` calendar months on the UTC date, same time of day.

    The day is clamped to the target month's length (31 Jan + 1 month = 28/29 Feb), the
    usual reading of "one month later" in law and what a person expects on a calendar.
    """
    days = ms // DAY_MS
    cache = _MONTH_CACHE.get(months)
    if cache is None:
        cache = _MONTH_CACHE[months] = {}
    later = cache.get(days)
    if later is None:
        if len(cache) >= _MONTH_CACHE_LIMIT:
            cache.clear()
        later = cache[days] = _add_months_days(days, months)
    return ms + (later - days) * DAY_MS


# --------------------------------------------------------------------------------------
# field-name normalisation
# --------------------------------------------------------------------------------------

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[\s\-.:/]+")
_UNDERSCORES = re.compile(r"_+")


@lru_cache(maxsize=8192)
def normalize_field_name(name: str) -> str:
    """The comparable form of a field name, so look-alikes cannot smuggle a forbidden field.

    NFKC folds full-width and compatibility characters, format characters (zero-width space,
    joiners, BOM, bidi marks) are dropped, camelCase is split, case is folded and
    separators read as ``_``.
    """
    s = unicodedata.normalize("NFKC", name)
    s = "".join(ch for ch in s if unicodedata.category(ch) != "Cf")
    s = _CAMEL.sub("_", s).casefold()
    s = _SEPARATORS.sub("_", s)
    return _UNDERSCORES.sub("_", s).strip("_")


# --------------------------------------------------------------------------------------
# the policy objects
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Purpose:
    name: str
    data_use: str
    legal_bases: tuple[str, ...]  # empty only for a forbidden purpose
    categories: tuple[str, ...]
    direct_marketing: bool
    channel: str | None
    obligation: bool
    forbidden: str | None
    description: str = ""
    meaning: str = ""
    """A digest of what the purpose means (use, bases, categories, channel, description): a
    consent records the meaning it was given to, and must be renewed once it changes."""
    consent_basis: str = ""
    """The basis a consent entry for it records: consent, where it may rest on it; else its own
    first basis (a consent to what a contract requires changes nothing)."""

    @property
    def consent_only(self) -> bool:
        return self.legal_bases == ("consent",)

    @property
    def objectionable(self) -> bool:
        """Whether the subject may object to it: a legitimate interest or a public task (art.
        21(1)), direct marketing (art. 21(2)), or consent (objecting is then withdrawing, never
        refused on a technicality). Never to what a contract or a legal obligation requires."""
        return self.direct_marketing or any(b in ("legitimate_interest", "public_task", "consent") for b in self.legal_bases)

    @property
    def objection_weighed(self) -> bool:
        """Whether an objection to it waits for the controller's decision (art. 21(1): unless it
        shows compelling legitimate grounds); processing stops meanwhile (art. 18(1)(d)). An
        objection to direct marketing is absolute, one to a consent purpose a withdrawal."""
        return not self.direct_marketing and any(b in ("legitimate_interest", "public_task") for b in self.legal_bases)


@dataclass(frozen=True, slots=True)
class RecordCategory:
    name: str
    data_category: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class RelationshipKind:
    name: str
    purposes: frozenset[str]
    max_months: int | None = None


@dataclass(frozen=True, slots=True)
class Consumer:
    name: str
    role: str
    region: str
    purposes: tuple[str, ...]
    transfer: str | None = None
    description: str = ""


@dataclass(frozen=True, eq=False)
class Policy:
    """The validated policy. Read-only mappings; build it with ``parse_policy``.

    Compared and hashed by identity, so it can key a cache.
    """

    name: str
    edition: str
    version: str
    """The SHA-256 (first 16 hex digits) of the policy file: what decisions record."""
    text: str
    """The policy file itself, as ``PolicyAdopted`` carries it into the log."""
    purposes: Mapping[str, Purpose]
    categories: Mapping[str, RecordCategory]
    relationships: Mapping[str, RelationshipKind]
    fields: Mapping[str, str]
    forbidden_categories: tuple[str, ...]
    forbidden_uses: tuple[str, ...]
    consumers: tuple[Consumer, ...]
    no_relationship_months: int
    post_contract_years: int
    post_relationship_grace_months: int
    regimes: tuple[str, ...]
    deadline_months: int
    extension_months: int
    max_days: int | None
    verification_wait_days: int | None
    free_text_fields: frozenset[str]  # normalised names
    lexicon_terms: Mapping[str, tuple[str, ...]]  # forbidden category -> its terms as written
    # derived, for the hot paths
    channels: Mapping[str, tuple[str, ...]]
    """channel -> the direct-marketing purposes on it (whatever their basis)."""
    direct_marketing: tuple[str, ...]
    consumer_names: tuple[str, ...]
    consumers_of: Mapping[str, tuple[str, ...]]
    """purpose -> the consumers that serve it (and so receive its records)."""
    _forbidden_fields: Mapping[str, str]
    _lexicon: Lexicon
    _free_text_memo: dict[str, bool] = field(default_factory=dict, init=False, repr=False)

    # ---- the guard's three questions --------------------------------------------------

    def forbidden_field_category(self, field_name: str) -> str | None:
        """The forbidden Fides category a field name maps to, else None.

        Besides the whole normalised name, every run of consecutive ``_``-separated words is
        tried (with and without the underscores), so ``customer_card_number``,
        ``HealthStatus`` or ``creditcard`` are caught as well as the exact names.
        """
        norm = normalize_field_name(field_name)
        ff = self._forbidden_fields
        hit = ff.get(norm)
        if hit is not None:
            return hit
        words = norm.split("_")
        n = len(words)
        for size in range(n, 0, -1):
            for start in range(n - size + 1):
                span = words[start : start + size]
                hit = ff.get("_".join(span)) or ff.get("".join(span))
                if hit is not None:
                    return hit
        return None

    def purpose_refusal(self, purpose: str) -> str | None:
        """Why an event naming ``purpose`` must be refused, or None if it may proceed."""
        p = self.purposes.get(purpose)
        if p is None:
            return "unknown_purpose"
        if p.forbidden is not None:
            return "forbidden_purpose"
        return None

    def free_text_lexicon(self, field_name: str) -> Lexicon | None:
        """The lexicon, when a field of this name holds free text, else None.

        A name is free text when its normalised form is listed under ``[free_text]`` or ends in
        a listed name after an ``_`` (``cover_note``, ``customerMessage``): the last word of an
        English compound names what it is, so a cover note is a note and a note id is an id.
        """
        memo = self._free_text_memo
        free = memo.get(field_name)
        if free is None:
            if len(memo) >= 4096:
                memo.clear()
            free = memo[field_name] = self._is_free_text(field_name)
        return self._lexicon if free else None

    def _is_free_text(self, field_name: str) -> bool:
        words = normalize_field_name(field_name).split("_")
        return any("_".join(words[i:]) in self.free_text_fields for i in range(len(words)))

    # ---- lookups the fold and the export use ------------------------------------------

    def is_forbidden_category(self, fides_category: str) -> bool:
        """Whether a Fides data category lies in a forbidden subtree (``[forbidden]``)."""
        return _in_subtrees(fides_category, self.forbidden_categories)

    def is_obligation(self, purpose: str) -> bool:
        """Whether a record of ``purpose`` is kept for a legal/tax obligation (and so survives
        erasure, restricted). The purpose decides, never the category label: a newsletter
        record filed as ``billing`` is no tax record."""
        p = self.purposes.get(purpose)
        return p is not None and p.obligation

    def serves(self, kind: str, purpose: str) -> bool:
        """Whether a relationship of ``kind`` keeps the records of ``purpose`` while it lasts."""
        rel = self.relationships.get(kind)
        return rel is not None and purpose in rel.purposes

    def no_relationship_deadline(self, collected_at: int) -> int:
        return add_months(collected_at, self.no_relationship_months)

    def post_contract_deadline(self, since: int) -> int:
        return add_months(since, 12 * self.post_contract_years)

    def grace_deadline(self, ended_at: int) -> int:
        return add_months(ended_at, self.post_relationship_grace_months)

    def request_deadline(self, received_at: int, extended: bool = False) -> int:
        """One month from receipt (three once extended), never past ``max_days``: the strictest
        of the regimes the policy names."""
        months = self.deadline_months + (self.extension_months if extended else 0)
        deadline = add_months(received_at, months)
        if self.max_days is not None:
            deadline = min(deadline, received_at + self.max_days * DAY_MS)
        return deadline

    def verification_deadline(self, received_at: int) -> int | None:
        """When a request still unverified is denied (None: it waits for its deadline)."""
        if self.verification_wait_days is None:
            return None
        return received_at + self.verification_wait_days * DAY_MS


def _in_subtrees(key: str, roots: tuple[str, ...] | list[str]) -> bool:
    return any(key == r or key.startswith(r + ".") for r in roots)


# --------------------------------------------------------------------------------------
# loading and validation
# --------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _taxonomy() -> tuple[frozenset[str], frozenset[str]]:
    from fideslang.default_taxonomy import DEFAULT_TAXONOMY

    cats = frozenset(c.fides_key for c in DEFAULT_TAXONOMY.data_category)
    uses = frozenset(u.fides_key for u in DEFAULT_TAXONOMY.data_use)
    return cats, uses


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(name: str) -> str:
    """A key as TOML writes it in a dotted key: bare, or quoted (``"user.health_and_medical"``)."""
    if _BARE_KEY.fullmatch(name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Reader:
    """Typed access to one TOML table that reports errors by dotted key."""

    def __init__(self, table: Any, key: str) -> None:
        if not isinstance(table, dict):
            raise PolicyError(f"{key}: expected a table, got {type(table).__name__}")
        self.table = table
        self.key = key
        self.used: set[str] = set()

    def k(self, name: str) -> str:
        name = _toml_key(name)
        return f"{self.key}.{name}" if self.key else name

    def get(self, name: str, kind: type | tuple[type, ...], *, required: bool = True, default: Any = None) -> Any:
        self.used.add(name)
        if name not in self.table:
            if required:
                raise PolicyError(f"{self.k(name)}: missing")
            return default
        value = self.table[name]
        if isinstance(value, bool) and kind is int:
            raise PolicyError(f"{self.k(name)}: expected an integer, got {value!r}")
        if not isinstance(value, kind):
            want = kind.__name__ if isinstance(kind, type) else " or ".join(t.__name__ for t in kind)
            raise PolicyError(f"{self.k(name)}: expected {want}, got {value!r}")
        return value

    def optional_text(self, name: str) -> str | None:
        v: str | None = self.get(name, str, required=False)
        if v is not None and not v.strip():
            raise PolicyError(f"{self.k(name)}: must not be empty")
        return v

    def text(self, name: str) -> str:
        self.get(name, str)  # missing: says so
        v = self.optional_text(name)
        assert v is not None
        return v

    def count(self, name: str, *, minimum: int = 0) -> int:
        v: int = self.get(name, int)
        if v < minimum:
            raise PolicyError(f"{self.k(name)}: {v} is less than {minimum}")
        return v

    def optional_choice(self, name: str, options: tuple[str, ...], *, required: bool = False) -> str | None:
        v: str | None = self.get(name, str, required=required)
        if v is not None and v not in options:
            raise PolicyError(f"{self.k(name)}: {v!r} is not one of {', '.join(options)}")
        return v

    def choice(self, name: str, options: tuple[str, ...]) -> str:
        v = self.optional_choice(name, options, required=True)
        assert v is not None
        return v

    def sub(self, name: str) -> _Reader:
        self.used.add(name)
        if name not in self.table:
            raise PolicyError(f"{self.k(name)}: missing")
        return _Reader(self.table[name], self.k(name))

    def done(self) -> None:
        extra = sorted(set(self.table) - self.used)
        if extra:
            raise PolicyError(f"{self.k(extra[0])}: unknown key")


def _data_category(r: _Reader, key: str, value: Any, cats: frozenset[str]) -> str:
    if not isinstance(value, str):
        raise PolicyError(f"{key}: expected a Fides data category name, got {value!r}")
    if value not in cats:
        raise PolicyError(f"{key}: {value!r} is not a data category of the Fides taxonomy")
    return value


def _names(
    r: _Reader, key: str, known: Mapping[str, Any] | tuple[str, ...], what: str, *, required: bool = True
) -> tuple[str, ...]:
    """A list of names from ``known``, non-empty unless not ``required``, without repeats."""
    values = r.get(key, list, required=required, default=[])
    if required and not values:
        raise PolicyError(f"{r.k(key)}: must name at least one {what}")
    for i, v in enumerate(values):
        if not isinstance(v, str) or v not in known:
            raise PolicyError(f"{r.k(key)}[{i}]: {v!r} is not a {what} of this policy")
    if len(set(values)) != len(values):
        raise PolicyError(f"{r.k(key)}: names a {what} twice")
    return tuple(values)


def _meaning(p: dict[str, Any]) -> str:
    raw = orjson.dumps(p, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(b"lifecycle-purpose-meaning\0" + raw).hexdigest()[:16]


def _purpose(pr: _Reader, name: str, uses: frozenset[str], forbidden_uses: list[str], categories: Mapping[str, Any]) -> Purpose:
    use = pr.text("data_use")
    if use not in uses:
        raise PolicyError(f"{pr.k('data_use')}: {use!r} is not a data use of the Fides taxonomy")
    forbidden = pr.optional_choice("forbidden", FORBIDDEN_KINDS)
    description = pr.optional_text("description") or ""
    if forbidden is not None:
        for key in ("legal_bases", "categories", "direct_marketing", "channel", "obligation"):
            if key in pr.table:
                raise PolicyError(f"{pr.k(key)}: a forbidden purpose is never pursued; it has no {key}")
        pr.done()
        return Purpose(name, use, (), (), False, None, False, forbidden, description)
    if _in_subtrees(use, forbidden_uses):
        raise PolicyError(
            f"{pr.k('data_use')}: {use!r} is profiling or automated decision-making; "
            "mark the purpose `forbidden` or choose another use"
        )
    bases = _names(pr, "legal_bases", LEGAL_BASES, "legal basis")
    cats = _names(pr, "categories", categories, "category")
    dm = pr.get("direct_marketing", bool, required=False, default=False)
    channel = pr.optional_text("channel")
    obligation = pr.get("obligation", bool, required=False, default=False)
    pr.done()
    if dm != (channel is not None):
        raise PolicyError(f"{pr.k('channel')}: a direct-marketing purpose names its channel, and only such a purpose has one")
    if dm and any(b not in DIRECT_MARKETING_BASES for b in bases):
        raise PolicyError(f"{pr.k('legal_bases')}: direct marketing rests on consent or a legitimate interest only")
    if obligation != ("legal_obligation" in bases):
        raise PolicyError(
            f"{pr.k('obligation')}: a purpose is an obligation exactly when `legal_obligation` is among its legal_bases"
        )
    meaning = _meaning(
        {"data_use": use, "legal_bases": bases, "categories": cats, "channel": channel, "description": description}
    )
    consent_basis = "consent" if "consent" in bases else bases[0]
    return Purpose(name, use, bases, cats, dm, channel, obligation, None, description, meaning, consent_basis)


def _consumer(c: _Reader, name: str, purposes: Mapping[str, Purpose]) -> Consumer:
    if not re.fullmatch(r"[a-z0-9][a-z0-9\-]{0,63}", name):
        raise PolicyError(f"{c.key}: a consumer's name names its topics and its login: lower-case letters, digits, '-'")
    role = c.choice("role", CONSUMER_ROLES)
    region = c.text("region")
    if not re.fullmatch(r"[a-z]{2}(-[a-z0-9]+)*", region):
        raise PolicyError(f"{c.k('region')}: {region!r} is not <jurisdiction>-<area> (eu-west, us-east, uk-south)")
    transfer = c.optional_choice("transfer", TRANSFER_SAFEGUARDS)
    served = _names(c, "purposes", purposes, "purpose")
    description = c.optional_text("description") or ""
    c.done()
    for i, pname in enumerate(served):
        if purposes[pname].forbidden is not None:
            raise PolicyError(f"{c.k('purposes')}[{i}]: {pname!r} is a forbidden purpose")
    jurisdiction = region.split("-")[0]
    if jurisdiction == EU and transfer is not None:
        raise PolicyError(f"{c.k('transfer')}: {region} is in the EU: there is no transfer to safeguard")
    if jurisdiction != EU and transfer is None:
        raise PolicyError(
            f"{c.k('transfer')}: missing: keeping data in {region} is a transfer out of the EU and needs a safeguard"
        )
    if transfer == "eu_us_data_privacy_framework" and jurisdiction != "us":
        raise PolicyError(f"{c.k('transfer')}: the EU-US Data Privacy Framework covers recipients in the US only, not {region}")
    if transfer == "adequacy_decision" and jurisdiction not in ADEQUATE:
        raise PolicyError(f"{c.k('transfer')}: there is no adequacy decision for {jurisdiction!r}")
    return Consumer(name, role, region, served, transfer, description)


def _build(doc: dict[str, Any], text: str) -> Policy:
    cats, uses = _taxonomy()
    root = _Reader(doc, "")

    meta = root.sub("policy")
    name = meta.text("name")
    edition = meta.text("edition")
    meta.done()

    req = root.sub("requests")
    regimes = _names(req, "regimes", REGIMES, "regime")
    deadline_months = req.count("deadline_months", minimum=1)
    extension_months = req.count("extension_months")
    caps = [REGIMES[r] for r in regimes if REGIMES[r] is not None]
    strictest = min(caps) if caps else None  # type: ignore[type-var]  # None filtered out above
    max_days: int | None = req.get("max_days", int, required=False, default=strictest)
    if max_days is not None and max_days < 28:
        raise PolicyError(f"requests.max_days: {max_days} is shorter than the shortest month")
    if max_days is not None and strictest is not None and max_days > strictest:
        raise PolicyError(f"requests.max_days: {max_days} exceeds the {strictest} days the strictest of the regimes allows")
    wait: int | None = req.get("verification_wait_days", int, required=False)
    if wait is not None and not 1 <= wait < 28:
        raise PolicyError("requests.verification_wait_days: must be 1 to 27, so the denial always comes within the first month")
    req.done()

    # forbidden subtrees first: categories and purposes are checked against them
    fb = root.sub("forbidden")
    forbidden_categories = fb.get("data_categories", list)
    for i, c in enumerate(forbidden_categories):
        _data_category(fb, f"forbidden.data_categories[{i}]", c, cats)
    forbidden_uses = fb.get("data_uses", list, required=False, default=[])
    for i, u in enumerate(forbidden_uses):
        if not isinstance(u, str) or u not in uses:
            raise PolicyError(f"forbidden.data_uses[{i}]: {u!r} is not a data use of the Fides taxonomy")
    fb.done()

    ct = root.sub("categories")
    categories: dict[str, RecordCategory] = {}
    for cname in ct.table:
        c = ct.sub(cname)
        dc = _data_category(c, c.k("data_category"), c.get("data_category", str), cats)
        if _in_subtrees(dc, forbidden_categories):
            raise PolicyError(f"{c.k('data_category')}: {dc!r} is a forbidden data category")
        description = c.optional_text("description") or ""
        c.done()
        categories[cname] = RecordCategory(cname, dc, description)
    missing = [c for c in CATEGORIES if c not in categories]
    if missing:
        raise PolicyError(f"categories.{missing[0]}: missing")

    pt = root.sub("purposes")
    if not pt.table:
        raise PolicyError("purposes: at least one purpose is needed")
    purposes = {pname: _purpose(pt.sub(pname), pname, uses, forbidden_uses, categories) for pname in pt.table}

    rt = root.sub("retention")
    no_rel = rt.count("no_relationship_months", minimum=1)
    post_years = rt.count("post_contract_years", minimum=0)
    grace = rt.count("post_relationship_grace_months", minimum=0)
    rt.done()

    rl = root.sub("relationships")
    relationships: dict[str, RelationshipKind] = {}
    for kind in rl.table:
        r = rl.sub(kind)
        if kind not in RELATIONSHIP_KINDS:
            raise PolicyError(f"{r.key}: {kind!r} is not a relationship kind ({', '.join(RELATIONSHIP_KINDS)})")
        served = _names(r, "purposes", purposes, "purpose", required=False)
        max_months = r.get("max_months", int, required=False)
        if max_months is not None and max_months < 1:
            raise PolicyError(f"{r.k('max_months')}: {max_months} is less than 1")
        r.done()
        relationships[kind] = RelationshipKind(kind, frozenset(served), max_months)
    missing = [k for k in RELATIONSHIP_KINDS if k not in relationships]
    if missing:
        raise PolicyError(f"relationships.{missing[0]}: missing")

    ft = root.sub("fields")
    fields: dict[str, str] = {}
    for fname, value in ft.table.items():
        ft.used.add(fname)
        key = ft.k(fname)
        dc = _data_category(ft, key, value, cats)
        norm = normalize_field_name(fname)
        if not norm:
            raise PolicyError(f"{key}: not a usable field name")
        if norm in fields and fields[norm] != dc:
            raise PolicyError(f"{key}: normalises to {norm!r}, already mapped to {fields[norm]!r}")
        fields[norm] = dc
    ft.done()

    free_text_fields, lexicon_terms, lexicon = _free_text(root.sub("free_text"), cats, forbidden_categories)

    cs = root.sub("consumers")
    consumers = sorted((_consumer(cs.sub(cname), cname, purposes) for cname in cs.table), key=lambda x: x.name)
    if not consumers:
        raise PolicyError("consumers: at least one consumer is needed")

    root.done()

    channels: dict[str, list[str]] = {}
    for purpose in purposes.values():
        if purpose.channel is not None:
            channels.setdefault(purpose.channel, []).append(purpose.name)
    forbidden_fields: dict[str, str] = {}
    for norm, dc in fields.items():
        if _in_subtrees(dc, forbidden_categories):
            forbidden_fields[norm] = dc
            forbidden_fields.setdefault(norm.replace("_", ""), dc)
    consumers_of = {p: tuple(c.name for c in consumers if p in c.purposes) for p in purposes}

    return Policy(
        name=name,
        edition=edition,
        version=policy_version(text),
        text=text,
        purposes=MappingProxyType(purposes),
        categories=MappingProxyType(categories),
        relationships=MappingProxyType(relationships),
        fields=MappingProxyType(fields),
        forbidden_categories=tuple(forbidden_categories),
        forbidden_uses=tuple(forbidden_uses),
        consumers=tuple(consumers),
        no_relationship_months=no_rel,
        post_contract_years=post_years,
        post_relationship_grace_months=grace,
        regimes=regimes,
        deadline_months=deadline_months,
        extension_months=extension_months,
        max_days=max_days,
        verification_wait_days=wait,
        free_text_fields=free_text_fields,
        lexicon_terms=MappingProxyType(lexicon_terms),
        channels=MappingProxyType({k: tuple(sorted(v)) for k, v in channels.items()}),
        direct_marketing=tuple(sorted(p.name for p in purposes.values() if p.direct_marketing)),
        consumer_names=tuple(c.name for c in consumers),
        consumers_of=MappingProxyType(consumers_of),
        _forbidden_fields=MappingProxyType(forbidden_fields),
        _lexicon=lexicon,
    )


def policy_version(text: str) -> str:
    """A policy file's version: the first 16 hex digits of the SHA-256 of its UTF-8 text, so
    ``sha256sum policy.toml`` names it too."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _free_text(
    ft: _Reader, cats: frozenset[str], forbidden_categories: list[str]
) -> tuple[frozenset[str], dict[str, tuple[str, ...]], Lexicon]:
    """``[free_text]``: the fields read as free text and, per forbidden category, the terms that
    reveal it. Every term is parsed as the guard will match it; a term listed twice (after
    folding) is refused, since its second place would say the policy means something it cannot."""
    names = ft.get("fields", list)
    fields: dict[str, int] = {}
    for i, fname in enumerate(names):
        key = f"{ft.k('fields')}[{i}]"
        norm = normalize_field_name(fname) if isinstance(fname, str) else ""
        if not norm:
            raise PolicyError(f"{key}: {fname!r} is not a usable field name")
        if norm in fields:
            raise PolicyError(f"{key}: {fname!r} normalises to {norm!r}, listed already at [{fields[norm]}]")
        fields[norm] = i
    lx = ft.sub("lexicon")
    terms: dict[str, tuple[str, ...]] = {}
    parsed: list[tuple[str, tuple[str, ...]]] = []
    seen: dict[tuple[str, ...], str] = {}
    for category in lx.table:
        key = lx.k(category)
        _data_category(lx, key, category, cats)
        if not _in_subtrees(category, forbidden_categories):
            raise PolicyError(f"{key}: {category!r} is not a forbidden data category of this policy")
        listed = lx.get(category, list)
        if not listed:
            raise PolicyError(f"{key}: at least one term is needed")
        for i, term in enumerate(listed):
            tkey = f"{key}[{i}]"
            if not isinstance(term, str):
                raise PolicyError(f"{tkey}: expected a term, got {term!r}")
            try:
                parts = lexicon_term(term)
            except ValueError as exc:
                raise PolicyError(f"{tkey}: {term!r}: {exc}") from None
            if parts in seen:
                raise PolicyError(f"{tkey}: {term!r} is listed already, at {seen[parts]}")
            seen[parts] = tkey
            parsed.append((category, parts))
        terms[category] = tuple(listed)
    lx.done()
    ft.done()
    return frozenset(fields), terms, Lexicon(parsed)


def parse_policy(text: str, source: str = "policy") -> Policy:
    """A policy from TOML text (the loader's core; handy for tests and tools)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from None
    return _build(doc, text)
