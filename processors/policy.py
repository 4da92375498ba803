"""The privacy policy as data: one TOML file, validated once, then read by the guard and the fold.

Why a file and not constants: privacy engineers change purposes, retention periods and
consumers without touching the code, and an auditor reads the very rules that ran. Why the
strict validation: a misspelt data category or an unknown legal basis would otherwise widen
what the pipeline accepts without anyone noticing, so every name is checked against the Fides
taxonomy that ``fideslang`` ships and every error names the offending key.

Calendar arithmetic lives here too (``add_months``): retention and request deadlines are
"N calendar months later" on UTC dates, computed from integer epoch milliseconds without
reading any clock, so live runs and replays agree to the millisecond.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from schemas.contract import CATEGORIES, LEGAL_BASES

FORBIDDEN_KINDS = ("profiling", "automated_decision", "sale")
CONSUMER_ROLES = ("processor", "controller")

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
    legal_basis: str | None
    channel: str | None
    forbidden: str | None
    description: str = ""


@dataclass(frozen=True, slots=True)
class RecordCategory:
    name: str
    data_category: str
    obligation: bool
    description: str = ""


@dataclass(frozen=True, slots=True)
class Consumer:
    name: str
    role: str
    region: str
    transfer: str | None = None
    description: str = ""


@dataclass(frozen=True, eq=False)
class Policy:
    """The validated policy. Read-only mappings; build it with ``load_policy``.

    Compared and hashed by identity, so it can key a cache.
    """

    name: str
    version: str
    purposes: Mapping[str, Purpose]
    categories: Mapping[str, RecordCategory]
    fields: Mapping[str, str]
    forbidden_categories: tuple[str, ...]
    forbidden_uses: tuple[str, ...]
    consumers: tuple[Consumer, ...]
    no_relationship_months: int
    post_contract_years: int
    post_relationship_grace_months: int
    deadline_months: int
    extension_months: int
    obligation_categories: frozenset[str]
    # derived, for the hot paths
    channels: Mapping[str, tuple[str, ...]]
    consumer_names: tuple[str, ...]
    _forbidden_fields: Mapping[str, str]

    # ---- the guard's two questions ----------------------------------------------------

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

    # ---- lookups the fold and the export use ------------------------------------------

    def is_forbidden_category(self, fides_category: str) -> bool:
        """Whether a Fides data category lies in a forbidden subtree (``[forbidden]``)."""
        return _in_subtrees(fides_category, self.forbidden_categories)

    def is_obligation(self, category: str, legal_basis: str) -> bool:
        """Whether a record is kept for a legal/tax obligation (and so survives erasure)."""
        return legal_basis == "legal_obligation" or category in self.obligation_categories

    def no_relationship_deadline(self, collected_at: int) -> int:
        return add_months(collected_at, self.no_relationship_months)

    def post_contract_deadline(self, since: int) -> int:
        return add_months(since, 12 * self.post_contract_years)

    def grace_deadline(self, ended_at: int) -> int:
        return add_months(ended_at, self.post_relationship_grace_months)

    def request_deadline(self, received_at: int, extended: bool = False) -> int:
        months = self.deadline_months + (self.extension_months if extended else 0)
        return add_months(received_at, months)


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


class _Reader:
    """Typed access to one TOML table that reports errors by dotted key."""

    def __init__(self, table: Any, key: str) -> None:
        if not isinstance(table, dict):
            raise PolicyError(f"{key}: expected a table, got {type(table).__name__}")
        self.table = table
        self.key = key
        self.used: set[str] = set()

    def k(self, name: str) -> str:
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


def _build(doc: dict[str, Any]) -> Policy:
    cats, uses = _taxonomy()
    root = _Reader(doc, "")

    meta = root.sub("policy")
    name = meta.text("name")
    version = meta.text("version")
    meta.done()

    req = root.sub("requests")
    deadline_months = req.count("deadline_months", minimum=1)
    extension_months = req.count("extension_months")
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

    pt = root.sub("purposes")
    if not pt.table:
        raise PolicyError("purposes: at least one purpose is needed")
    purposes: dict[str, Purpose] = {}
    for pname in pt.table:
        pr = pt.sub(pname)
        use = pr.text("data_use")
        if use not in uses:
            raise PolicyError(f"{pr.k('data_use')}: {use!r} is not a data use of the Fides taxonomy")
        forbidden = pr.optional_choice("forbidden", FORBIDDEN_KINDS)
        basis = pr.optional_choice("legal_basis", LEGAL_BASES, required=forbidden is None)
        channel = pr.optional_text("channel")
        description = pr.optional_text("description") or ""
        pr.done()
        if forbidden is None and _in_subtrees(use, forbidden_uses):
            raise PolicyError(
                f"{pr.k('data_use')}: {use!r} is profiling or automated decision-making; "
                "mark the purpose `forbidden` or choose another use"
            )
        if channel is not None and forbidden is None and basis != "consent":
            raise PolicyError(f"{pr.k('legal_basis')}: a marketing purpose with a channel needs consent")
        purposes[pname] = Purpose(pname, use, basis, channel, forbidden, description)

    rt = root.sub("retention")
    no_rel = rt.count("no_relationship_months", minimum=1)
    post_years = rt.count("post_contract_years", minimum=0)
    grace = rt.count("post_relationship_grace_months", minimum=0)
    obligation_list = rt.get("obligation_categories", list)
    rt.done()

    ct = root.sub("categories")
    categories: dict[str, RecordCategory] = {}
    for cname in ct.table:
        c = ct.sub(cname)
        dc = _data_category(c, c.k("data_category"), c.get("data_category", str), cats)
        if _in_subtrees(dc, forbidden_categories):
            raise PolicyError(f"{c.k('data_category')}: {dc!r} is a forbidden data category")
        description = c.optional_text("description") or ""
        c.done()
        categories[cname] = RecordCategory(cname, dc, False, description)
    missing = [c for c in CATEGORIES if c not in categories]
    if missing:
        raise PolicyError(f"categories.{missing[0]}: missing")
    for i, oc in enumerate(obligation_list):
        if oc not in categories:
            raise PolicyError(f"retention.obligation_categories[{i}]: {oc!r} is not a category of this policy")
    obligation = frozenset(obligation_list)
    categories = {k: RecordCategory(v.name, v.data_category, k in obligation, v.description) for k, v in categories.items()}

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

    cs = root.sub("consumers")
    consumers: list[Consumer] = []
    for cname in cs.table:
        c = cs.sub(cname)
        role = c.choice("role", CONSUMER_ROLES)
        region = c.text("region")
        transfer = c.optional_text("transfer")
        description = c.optional_text("description") or ""
        c.done()
        consumers.append(Consumer(cname, role, region, transfer, description))
    if not consumers:
        raise PolicyError("consumers: at least one consumer is needed")
    consumers.sort(key=lambda x: x.name)

    root.done()

    channels: dict[str, list[str]] = {}
    for purpose in purposes.values():
        if purpose.channel is not None and purpose.forbidden is None:
            channels.setdefault(purpose.channel, []).append(purpose.name)
    forbidden_fields: dict[str, str] = {}
    for norm, dc in fields.items():
        if _in_subtrees(dc, forbidden_categories):
            forbidden_fields[norm] = dc
            forbidden_fields.setdefault(norm.replace("_", ""), dc)

    return Policy(
        name=name,
        version=version,
        purposes=MappingProxyType(purposes),
        categories=MappingProxyType(categories),
        fields=MappingProxyType(fields),
        forbidden_categories=tuple(forbidden_categories),
        forbidden_uses=tuple(forbidden_uses),
        consumers=tuple(consumers),
        no_relationship_months=no_rel,
        post_contract_years=post_years,
        post_relationship_grace_months=grace,
        deadline_months=deadline_months,
        extension_months=extension_months,
        obligation_categories=obligation,
        channels=MappingProxyType({k: tuple(sorted(v)) for k, v in channels.items()}),
        consumer_names=tuple(c.name for c in consumers),
        _forbidden_fields=MappingProxyType(forbidden_fields),
    )


def parse_policy(text: str, source: str = "policy") -> Policy:
    """A policy from TOML text (the loader's core; handy for tests and tools)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from None
    return _build(doc)
