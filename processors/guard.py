"""What must never be stored, screened one event at a time with no state and no I/O.

The policy promises that special-category data (racial or ethnic origin, religion, political
views, sexual orientation, health, ...) and payment data are never stored, and that purposes
such as profiling or the sale of data are refused like forbidden data. ``screen`` applies those
promises to one already-validated upstream event and returns the first ``Refusal`` or ``None``.

A ``Refusal`` names the rule and where it fired (``purpose``, ``fields.<name>``), never the
offending value: it is written to ``lifecycle.rejected`` and to logs, which must not become a
second copy of the data the guard exists to keep out.

Detection is deliberately tolerant of disguise, because the data arrives from forms people type
into: text is NFKC-normalised (fullwidth digits, ligatures), invisible format characters are
dropped (zero-width space, soft hyphen, Hangul fillers), and field names are also folded through
common Cyrillic, Greek, Armenian, Cherokee and small-capital look-alikes of Latin letters and read
as displayed (a right-to-left override shows letters reversed), so ``rel\\u200bigion``, or
``health`` typed with a Cyrillic ie for its e, cannot dodge the list. Free text (a ``message``,
a ``cv``) is read, folded the same way, against the policy's lexicon of words and phrases that
reveal a special category ("diagnosed with", "member of the * party"): names alone would let
"I was diagnosed with diabetes" through in a field called ``message``.

Number detection is deliberately strict in the other direction: a digit run is only a card if
it passes Luhn, only an IBAN if it passes mod-97, only a Social Security number in its 3-2-4
grouping (or where a name says SSN), only a routing number where a name or the words beside it
say so, so phone numbers and order ids get through. A BIC names a bank, not an account: it is
billing data and passes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import orjson

from schemas import UPSTREAM_EVENTS
from schemas.contract import ENUMS, is_plain_name, looks_like_contact_data

__all__ = [
    "MAX_SEALED_BYTES",
    "PURPOSE_EXEMPT",
    "GuardPolicy",
    "Lexicon",
    "Refusal",
    "contains_iban",
    "contains_payment_card",
    "contains_routing_number",
    "contains_us_ssn",
    "echoable",
    "fold_name",
    "future_time",
    "is_special_category_name",
    "lexicon_term",
    "screen",
    "sealed_size",
    "wrong_key",
]


@dataclass(frozen=True)
class Refusal:
    """Why an event was refused: a reason code and where, never what."""

    reason: str
    field: str


class GuardPolicy(Protocol):
    """The three questions the guard asks the policy file."""

    def forbidden_field_category(self, name: str) -> str | None:
        """The forbidden data category a field name maps to (``user.health_and_medical``)."""
        ...

    def purpose_refusal(self, purpose: str) -> str | None:
        """A reason code (``forbidden_purpose``, ``unknown_purpose``) or None when allowed."""
        ...

    def free_text_lexicon(self, name: str) -> Lexicon | None:
        """The lexicon a field of this name is read against when it holds free text
        (``message``, ``cv``), else None. ``name`` comes folded, its words joined by ``_``."""
        ...


PURPOSE_EXEMPT = frozenset({"ConsentWithdrawn", "RestrictionRequested", "ObjectionRaised"})
"""Events that stop processing for a purpose. Refusing them because the purpose is forbidden or
unknown would refuse the data subject exactly when they object to it (an objection to profiling
names a forbidden purpose) and drop a request the pipeline must answer."""

# --- normalisation --------------------------------------------------------------------------

# Cyrillic, Greek, Armenian, Cherokee and odd Latin letters that render like a-z (after
# casefold), the usual disguise for a field name that must not match a word list: Unicode
# name -> the letter it passes for. Named rather than pasted, because pasted look-alikes are
# exactly what a reviewer cannot see.
# fmt: off
_LOOK_ALIKES = {
    "CYRILLIC SMALL LETTER": {
        "A": "a", "VE": "b", "SOFT SIGN": "b", "HARD SIGN": "b", "ES": "c", "KOMI DE": "d",
        "IE": "e", "IO": "e", "E": "e", "UKRAINIAN IE": "e", "KOMI SJE": "g", "SHHA": "h",
        "EN": "h", "BYELORUSSIAN-UKRAINIAN I": "i", "YI": "i", "PALOCHKA": "l", "JE": "j",
        "KA": "k", "EM": "m", "PE": "n", "EL": "n", "O": "o", "O WITH DIAERESIS": "o",
        "ER": "p", "QA": "q", "GHE": "r", "DZE": "s", "TE": "t", "TSE": "u", "I": "u",
        "SHORT I": "u", "IZHITSA": "v", "SHA": "w", "SHCHA": "w", "WE": "w", "OMEGA": "w",
        "HA": "x", "U": "y", "STRAIGHT U": "y", "STRAIGHT U WITH STROKE": "y", "ZE": "3",
    },
    "GREEK SMALL LETTER": {
        "ALPHA": "a", "BETA": "b", "DELTA": "d", "EPSILON": "e",
        "ETA": "n", "IOTA": "i", "KAPPA": "k", "MU": "u", "NU": "v", "OMICRON": "o",
        "THETA": "o", "PI": "n", "RHO": "p", "SIGMA": "o", "TAU": "t", "UPSILON": "u",
        "CHI": "x", "GAMMA": "y", "OMEGA": "w", "ZETA": "z",
    },
    "GREEK": {
        "LUNATE EPSILON SYMBOL": "e", "LETTER YOT": "j",
        "KAPPA SYMBOL": "k", "RHO SYMBOL": "p",
    },
    "LATIN": {
        "SMALL LETTER DOTLESS I": "i", "SMALL LETTER DOTLESS J": "j", "SMALL LETTER ALPHA": "a",
        "SMALL LETTER IOTA": "i", "SMALL LETTER SCRIPT G": "g",
        # the small capitals, as in "\u029c\u1d07\u1d00\u029f\u1d1b\u029c" (there is no X)
        **{f"LETTER SMALL CAPITAL {c}": c.lower() for c in "ABCDEFGHIJKLMNOPQRSTUVWYZ"},
    },
    "ARMENIAN SMALL LETTER": {
        "HO": "h", "OH": "o", "SEH": "u", "VO": "n", "CO": "g", "ZA": "q", "YI": "j",
    },
    # Cherokee has capitals that pass for Latin ones, and casefolding maps its small letters
    # onto them rather than the other way round
    "CHEROKEE LETTER": {
        "GO": "a", "YV": "b", "TLI": "c", "A": "d", "GV": "e", "NAH": "g", "MI": "h", "V": "i",
        "GU": "j", "TSO": "k", "TLE": "l", "LU": "m", "TLV": "p", "E": "r", "SV": "r", "DU": "s",
        "I": "t", "DO": "v", "LA": "w", "GI": "y", "NO": "z", "SI": "b", "NI": "h",
    },
}
# Mapped before casefolding: Greek capitals that pass for Latin capitals whose small letters
# do not (an eta is an "H" while its small letter reads "n"), and the final and lunate sigmas,
# which look like a "c" but casefold to a sigma (NFKC turns the lunate one into the final one).
_CAPITAL_LOOK_ALIKES = {
    "GREEK CAPITAL LETTER": {
        "ALPHA": "a", "BETA": "b", "EPSILON": "e", "ZETA": "z", "ETA": "h", "IOTA": "i",
        "KAPPA": "k", "MU": "m", "NU": "n", "OMICRON": "o", "RHO": "p", "TAU": "t",
        "UPSILON": "y", "CHI": "x",
    },
    "GREEK": {
        "SMALL LETTER FINAL SIGMA": "c", "LUNATE SIGMA SYMBOL": "c",
        "CAPITAL LUNATE SIGMA SYMBOL": "c",
    },
}
# fmt: on


def _table(look_alikes: dict[str, dict[str, str]]) -> dict[int, str]:
    return str.maketrans(
        {
            unicodedata.lookup(f"{script} {name}"): latin
            for script, letters in look_alikes.items()
            for name, latin in letters.items()
        }
    )


_CONFUSABLES = _table(_LOOK_ALIKES)
_CAPITAL_CONFUSABLES = _table(_CAPITAL_LOOK_ALIKES)
# Invisible characters that are not format characters (Cf) and so survive the filter below:
# the combining grapheme joiner, Hangul and Khmer fillers, Mongolian free variation selectors
# and the variation selectors. "hea\u3164lth" renders as "health".
_IGNORABLE = frozenset(
    {0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x3164, 0xFFA0}
    | set(range(0x180B, 0x1810))
    | set(range(0xFE00, 0xFE10))
    | set(range(0xE0100, 0xE01F0))
)
_RLO, _PDF = "\u202e", "\u202c"
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def _visible(text: str) -> str:
    """NFKC with format characters (zero-width, soft hyphen, bidi marks) and other invisible
    characters (Hangul fillers, variation selectors) removed."""
    if text.isascii():
        return text  # every format character and every NFKC change is outside ASCII
    text = unicodedata.normalize("NFKC", text)
    return "".join(c for c in text if c.isascii() or (unicodedata.category(c) != "Cf" and ord(c) not in _IGNORABLE))


def _as_displayed(text: str) -> str:
    """The text in the order it is shown: a right-to-left override (RLO) displays what follows
    it, up to a pop (PDF), backwards, so ``"\\u202ehtlaeh"`` is seen as "health"."""
    out, rest = [], text
    while _RLO in rest:
        before, _, rest = rest.partition(_RLO)
        inside, _, rest = rest.partition(_PDF)
        out += [before, inside[::-1]]
    return "".join(out) + rest


def fold_name(name: str) -> str:
    """A field name as compared against word lists: NFKC, no format characters, no accents,
    look-alike letters mapped to Latin, casefolded: ``"H\\u0435alth"`` (a Cyrillic ie) gives
    ``"health"``."""
    text = _visible(name)
    if text.isascii():
        return text.casefold()
    text = unicodedata.normalize("NFKD", text).translate(_CAPITAL_CONFUSABLES)
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return unicodedata.normalize("NFKC", text).translate(_CONFUSABLES)


# --- special categories ---------------------------------------------------------------------

# Second line behind the policy's own mapping: GDPR art. 9 categories by the words field names
# use. Stems match anywhere in the name with separators removed (``healthStatus``,
# ``religious_affiliation``); short words only as a whole token, so ``trace`` or ``embrace``
# are not ``race``.
# fmt: off
_STEMS = (
    "health", "medical", "medicat", "medicin", "diagnos", "disease", "illness", "disabilit",
    "handicap", "allerg", "pregnan", "prescription", "symptom", "therap", "vaccin", "injur",
    "sickness", "sickleave", "bloodtype", "bloodgroup", "genetic", "genome", "biometric",
    "religio", "ethnic", "racial", "skincolo", "politic", "tradeunion", "unionmember",
    "laborunion", "labourunion", "sexual", "sexlife", "philosophicalbelief",
)
_WORDS = frozenset(
    {"race", "races", "dna", "hiv", "faith", "belief", "beliefs", "caste", "disabled",
     "mental", "patient", "sick", "covid"}
)
# fmt: on
_STEM = re.compile("|".join(_STEMS))
_NOT_WORD = re.compile(r"[\W_]+")


def is_special_category_name(name: str) -> bool:
    """Whether a field name alone says it holds special-category data (built-in word list),
    as stored or as displayed (a right-to-left override shows stored letters reversed)."""
    if _RLO in name and _names_special_category(_name_words(_as_displayed(name))):
        return True
    return _names_special_category(_name_words(name))


def _name_words(name: str) -> list[str]:
    """A field name's words, folded: ``"coverN\u043ete"`` (a Cyrillic o) gives cover, note."""
    spaced = _CAMEL.sub("_", _visible(name))
    return [t for t in _NOT_WORD.split(fold_name(spaced)) if t]


def _names_special_category(tokens: list[str]) -> bool:
    if any(t in _WORDS for t in tokens):
        return True
    return _STEM.search("".join(tokens)) is not None


# --- special categories in free text --------------------------------------------------------

# Text is read as words, runs of letters and digits, folded like field names.
_TOKEN = re.compile(r"[^\W_]+")
_TERM_WORD = re.compile(r"[^\W_]+(?:['\u2019\-][^\W_]+)*")
_STEM_MIN = 4  # "pregnan*"; a stem of three letters matches too many unrelated words
_WILDCARD_WORDS = 3  # "member of the * party": one to three words (Social Democratic)
_TERM_WORDS = 8  # bounds the work a term can take at one place of a text


def lexicon_term(term: str) -> tuple[str, ...]:
    """A lexicon term as the parts it is matched by, folded like the text it is read in: a word
    (``diabetes``), a stem ending in ``*`` (``pregnan*``: pregnant, pregnancy) or ``*`` alone,
    one to three words of any kind between others (``member of the * party``).

    Raises ValueError saying why a term cannot be matched, for the policy loader to report
    under the term's key: a term that silently matched nothing would be a hole in the screen.
    """
    parts: list[str] = []
    for word in fold_name(term).split():
        if word == "*":
            if not parts or parts[-1] == "*":
                raise ValueError("'*' stands for words between two others, never first or twice in a row")
            parts.append(word)
        elif word.endswith("*"):
            stem = word[:-1]
            if _TOKEN.fullmatch(stem) is None or len(stem) < _STEM_MIN:
                raise ValueError(f"a stem is {_STEM_MIN} or more letters or digits, then '*'")
            parts.append(word)
        elif "*" in word:
            raise ValueError("'*' ends a stem or stands alone for words, never inside a word")
        elif _TERM_WORD.fullmatch(word):
            parts += _TOKEN.findall(word)
        else:
            raise ValueError("a term is words of letters and digits, joined by spaces, hyphens or apostrophes")
    if not parts:
        raise ValueError("an empty term")
    if parts[-1] == "*":
        raise ValueError("'*' stands for words between two others, never last")
    if len(parts) > _TERM_WORDS:
        raise ValueError(f"more than {_TERM_WORDS} words")
    return tuple(parts)


# The pieces a term's regular expression is made of, beside its letters. Possessive, so that
# no attempt gives back what it took: each costs at most the length of the words it covers.
# The words of a phrase may be apart by spaces, hyphens, dashes, underscores or an apostrophe
# ("type-2 diabetes", "Jehovah\u2019s Witness"), never by a comma or a full stop, so that a
# phrase does not match across two clauses.
_GAP_RE = r"[\s_'\u2019\-\u2010-\u2015]++"
_TAIL_RE = r"[^\W_]*+"  # the rest of a word a stem starts
_WILD_RE = rf"(?:[^\W_]++{_GAP_RE}){{1,{_WILDCARD_WORDS}}}"  # its own gap included


def _atoms(parts: tuple[str, ...]) -> list[str]:
    """A term's parts as regular-expression atoms, one per letter, so terms share prefixes."""
    atoms: list[str] = []
    for i, part in enumerate(parts):
        if i and parts[i - 1] != "*":
            atoms.append(_GAP_RE)
        if part == "*":
            atoms.append(_WILD_RE)
        elif part.endswith("*"):
            atoms += [re.escape(c) for c in part[:-1]]
            atoms.append(_TAIL_RE)
        else:
            atoms += [re.escape(c) for c in part]
    return atoms


def _trie_pattern(terms: Iterable[tuple[str, ...]]) -> str:
    """One regular expression for many terms, factored as a trie ("diabet*" and "dialysis"
    share "dia"), so a search tries a few letters at each word start, not every term."""
    root: dict[str, Any] = {}
    for parts in terms:
        node = root
        for atom in _atoms(parts):
            node = node.setdefault(atom, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        alts = [atom + emit(child) for atom, child in sorted(node.items()) if atom]
        if "" in node:
            alts.append("")  # a term ends here; a longer one is tried first
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    return emit(root)


class Lexicon:
    """Words and phrases that, in free text, reveal a special category.

    Why one regular expression: every ``message`` of every form is read, and most hold none
    of the terms, so that case must cost little. All the terms are one trie-shaped expression,
    anchored at word starts, and a search costs a few steps a character in C, however many
    terms there are. Its pieces are possessive (nothing taken is given back) and a term has
    at most eight words, ``*`` at most three, so every attempt is bounded and no text, however
    made, costs more than a bounded step per character. Which category a hit reveals is asked
    only on a hit.
    """

    __slots__ = ("_any", "_each")

    def __init__(self, terms: Iterable[tuple[str, tuple[str, ...]]]) -> None:
        """``terms``: (Fides category, the parts ``lexicon_term`` gave), in the policy's order."""
        by_category: dict[str, list[tuple[str, ...]]] = {}
        for category, parts in terms:
            by_category.setdefault(category, []).append(parts)
        every = [parts for listed in by_category.values() for parts in listed]
        self._any = re.compile(r"(?<![^\W_])" + _trie_pattern(every) + r"(?![^\W_])") if every else None
        self._each = [(category, re.compile(_trie_pattern(listed))) for category, listed in by_category.items()]

    def category_in(self, text: str) -> str | None:
        """The special category the first term found in ``text`` reveals, or None. Matched on
        whole words after the folding field names get (NFKC, invisible characters dropped,
        look-alike letters mapped, accents and case folded), so "fundamental" is not "mental"
        and "D\u0456abetes" (a Cyrillic i) is "diabetes"."""
        if self._any is None or not text:
            return None
        folded = fold_name(text)
        hit = self._any.search(folded)
        if hit is None:
            return None
        a, b = hit.span()
        # one of them matches: both expressions are built from the same terms
        return next((category for category, pattern in self._each if pattern.fullmatch(folded, a, b)), "?")


# --- payment cards --------------------------------------------------------------------------

_SEPARATORS = r"[\s.\-\u2010-\u2015\u2212\ufe58\ufe63]"
_DIGIT_RUN = re.compile(rf"\d(?:{_SEPARATORS}{{0,3}}\d)*")
_SEPARATOR_RUN = re.compile(rf"{_SEPARATORS}+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = ord(ch) - 48
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _card_in_groups(groups: list[str]) -> bool:
    """A card is 13-19 digits that pass Luhn. It may be written in groups and sit next to other
    numbers ("4111 1111 1111 1111 123"), so every run of whole consecutive groups is tried."""
    for i in range(len(groups)):
        if groups[i][0] == "0":
            continue  # no payment card number starts with 0; "0049 ..." phone numbers do
        total = 0
        for j in range(i, len(groups)):
            total += len(groups[j])
            if total > 19:
                break
            if total >= 13 and _luhn("".join(groups[i : j + 1])):
                return True
    return False


def contains_payment_card(text: str, *, glued: bool = False) -> bool:
    """A payment card number anywhere in the text, however it is spaced or disguised.

    A digit run glued to letters is normally part of a longer token (a hex id) and passes;
    ``glued=True`` counts it too, for field names, where long digit runs have no business.
    """
    if len(text) < 13:
        return False
    text = _visible(text)
    if "-" in text:
        text = _UUID.sub(" ", text)  # uuid4 event ids hold digit groups that can pass Luhn
    end = len(text)
    for m in _DIGIT_RUN.finditer(text):
        start, stop = m.span()
        if stop - start < 13:
            continue
        # A run after "+" is a phone number; one glued to letters is part of a longer token.
        if start and text[start - 1] == "+":
            continue
        if not glued and ((start and text[start - 1].isalnum()) or (stop < end and text[stop].isalnum())):
            continue
        run = m.group()
        if not run.isascii():
            run = "".join(str(int(c)) if c.isdigit() else c for c in run)  # other scripts' digits
        if _card_in_groups(_SEPARATOR_RUN.split(run)):
            return True
    return False


# --- bank accounts --------------------------------------------------------------------------

# IBAN length per country (SWIFT IBAN registry). A country outside it is not an IBAN.
# fmt: off
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}
# fmt: on
_IBAN_START = re.compile(r"(?<![^\W_])([A-Za-z]{2})([0-9]{2})")


def _mod97(iban: str) -> bool:
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def contains_iban(text: str) -> bool:
    """An IBAN anywhere in the text, compact or in groups, that passes its mod-97 check."""
    if len(text) < 15:
        return False
    text = _visible(text)
    end = len(text)
    for m in _IBAN_START.finditer(text):
        need = _IBAN_LENGTHS.get(m.group(1).upper())
        if need is None:
            continue
        chars = [m.group(1), m.group(2)]
        have = 4
        i = m.end()
        after_separator = False
        while i < end and have < need:
            c = text[i]
            if c.isascii() and c.isalnum():
                chars.append(c)
                have += 1
                after_separator = False
            elif (c == "-" or c.isspace()) and not after_separator:
                after_separator = True
            else:
                break
            i += 1
        if have < need or (i < end and text[i].isalnum()):
            continue  # too short, or part of a longer token
        candidate = "".join(chars)
        letters = "".join(c for c in candidate if c.isalpha())
        if not (letters.isupper() or letters.islower()):
            continue  # mixed case is base64 or a hash, not a bank account typed by a person
        if _mod97(candidate.upper()):
            return True
    return False


# --- US Social Security and routing numbers ---------------------------------------------------

# A Social Security number is nine digits, which phone numbers, order ids and dates also are:
# only its own 3-2-4 grouping ("123-45-6789", or with spaces; a dot makes it a version or a
# part number) says SSN on its face. Written otherwise ("123456789"), it is one only where a
# name says so: the field's, or the words just before it ("SSN: 123456789").
_SSN_GAPS = re.compile(r"[\s\-\u2010-\u2015\u2212\ufe58\ufe63]+")
_SSN_WORDS = re.compile(r"(?<![^\W_])(?:ssn|social\s+security)(?![^\W_])")
# A routing number passes its checksum by chance one time in ten, and its leading digits are
# those of a third of all numbers: only a name or a word beside it makes one plausible.
_ROUTING_WORDS = re.compile(r"(?<![^\W_])(?:routing|aba|rtn)(?![^\W_])")
_BEFORE, _AFTER = 40, 24  # how near a word must be to the number: "routing number is 0210..."
_ROUTING_PREFIXES = frozenset(f"{n:02d}" for n in (*range(13), *range(21, 33), *range(61, 73), 80))
# What joins digits to a word into one id ("ORD-123-45-6789", "e-000000001", "inv_123456789").
_ID_JOINERS = frozenset("-_./")
# What an ASCII value must hold to be worth a closer look: nine digits, at most three
# separators between two, not glued or joined to a word on either side (the rules of
# ``_nine_digit_runs``, loosened, never tightened). Most values hold none, ids like
# "e-000000001" included. It starts with a digit and looks behind it from there, so a search
# skips to the digits at C speed. Text that is not ASCII always gets the closer look, since
# invisible characters may sit between its digits.
_NINE_DIGITS = re.compile(
    rf"[0-9](?<![0-9A-Za-z+][0-9])(?<![0-9A-Za-z][-_./][0-9])"
    rf"(?:{_SEPARATORS}{{0,3}}[0-9]){{8}}(?![0-9A-Za-z])(?![-_./][0-9A-Za-z])"
)
_LEADING_WORD = re.compile(r"^[^\W_]+")
_TRAILING_WORD = re.compile(r"[^\W_]+$")


class _Run(NamedTuple):
    start: int
    stop: int
    groups: list[str]  # the digits as written in groups, ASCII digits
    separators: list[str]


def _nine_digit_runs(text: str) -> list[_Run]:
    """Every run of exactly nine digits that stands alone: not glued to letters or joined to
    them by a hyphen, dot, underscore or slash (part of an id: "ORD-123-45-6789"), not after
    "+" (a phone number), not part of a longer number."""
    if len(text) < 9:
        return []
    runs = []
    end = len(text)
    for m in _DIGIT_RUN.finditer(text):
        start, stop = m.span()
        if stop - start < 9 or stop - start > 33:  # nine digits, at most three separators between two
            continue
        if start and (text[start - 1] == "+" or text[start - 1].isalnum()):
            continue
        if start > 1 and text[start - 1] in _ID_JOINERS and text[start - 2].isalnum():
            continue
        if stop < end and (text[stop].isalnum() or (text[stop] in _ID_JOINERS and text[stop + 1 : stop + 2].isalnum())):
            continue
        run = m.group()
        if not run.isascii():
            run = "".join(str(int(c)) if c.isdigit() else c for c in run)
        groups = _SEPARATOR_RUN.split(run)
        if sum(map(len, groups)) == 9:
            runs.append(_Run(start, stop, groups, _SEPARATOR_RUN.findall(run)))
    return runs


def _issuable_ssn(digits: str) -> bool:
    """Not a number the SSA never issues: area 000, 666 or 900-999, group 00, serial 0000."""
    area = digits[:3]
    return area not in ("000", "666") and area[0] != "9" and digits[3:5] != "00" and digits[5:] != "0000"


def _aba_valid(digits: str) -> bool:
    """The ABA checksum (weights 3, 7, 1) and a leading pair the Federal Reserve assigns:
    00-12 banks, 21-32 thrifts, 61-72 electronic, 80 traveller's cheques."""
    if digits[:2] not in _ROUTING_PREFIXES or digits == "000000000":
        return False
    d = [ord(c) - 48 for c in digits]
    return (3 * (d[0] + d[3] + d[6]) + 7 * (d[1] + d[4] + d[7]) + d[2] + d[5] + d[8]) % 10 == 0


def _before(text: str, run: _Run) -> str:
    """The words just before a run, folded; a word the window cuts in two is left out, so the
    tail of "rerouting" is not the word "routing"."""
    start = max(0, run.start - _BEFORE)
    window = text[start : run.start]
    if start and text[start - 1].isalnum():
        window = _LEADING_WORD.sub("", window, count=1)
    return fold_name(window)


def _after(text: str, run: _Run) -> str:
    """The words just after a run, folded, a word cut in two by the window's end left out."""
    stop = run.stop + _AFTER
    window = text[run.stop : stop]
    if stop < len(text) and text[stop].isalnum():
        window = _TRAILING_WORD.sub("", window, count=1)
    return fold_name(window)


def _ssn_in(text: str, runs: list[_Run], bare: bool) -> bool:
    for run in runs:
        digits = "".join(run.groups)
        if not _issuable_ssn(digits):
            continue
        grouped = [len(g) for g in run.groups] == [3, 2, 4] and all(_SSN_GAPS.fullmatch(s) for s in run.separators)
        if grouped or bare or _SSN_WORDS.search(_before(text, run)):
            return True
    return False


def _routing_in(text: str, runs: list[_Run], named: bool) -> bool:
    for run in runs:
        if not _aba_valid("".join(run.groups)):
            continue
        if named or _ROUTING_WORDS.search(_before(text, run)) or _ROUTING_WORDS.search(_after(text, run)):
            return True
    return False


def _runs_in(text: str) -> tuple[str, list[_Run]]:
    """The text as shown and its lone nine-digit runs, uuids aside (their groups are digits).
    A uuid stands in as a letter, so that digits glued to one stay glued to a token."""
    if len(text) < 9:
        return text, []
    text = _visible(text)
    if "-" in text:
        text = _UUID.sub("x", text)
    return text, _nine_digit_runs(text)


def contains_us_ssn(text: str, *, bare: bool = False) -> bool:
    """A US Social Security number the SSA could have issued: in its 3-2-4 grouping anywhere,
    or as any nine digits after the words "SSN" or "social security", or anywhere in a field
    whose name says SSN (``bare``)."""
    text, runs = _runs_in(text)
    return bool(runs) and _ssn_in(text, runs, bare)


def contains_routing_number(text: str, *, named: bool = False) -> bool:
    """An ABA routing number where one is plausible: nine digits passing the checksum, next to
    the words "routing", "ABA" or "RTN", or anywhere in a field whose name says so (``named``)."""
    text, runs = _runs_in(text)
    return bool(runs) and _routing_in(text, runs, named)


def _number_reason(text: str, key: object) -> str:
    """``us_ssn`` or ``bank_account`` (a routing number) for a string value, else ""; the
    value's field name is only looked at once the value holds nine lone digits."""
    if len(text) < 9 or (text.isascii() and _NINE_DIGITS.search(text) is None):
        return ""
    text, runs = _runs_in(text)
    if not runs:
        return ""
    says = _name_verdict(key).says if isinstance(key, str) else ""
    if _ssn_in(text, runs, bare=says == "ssn"):
        return "us_ssn"
    if _routing_in(text, runs, named=says == "routing"):
        return "bank_account"
    return ""


# --- the screen -----------------------------------------------------------------------------


def _label(parent: str, key: object) -> str:
    """``fields.<name>`` when the name, or its folded form, is a plain identifier; a name that
    is anything else may be data itself, so then only the parent is named."""
    if isinstance(key, str):
        for name in (key, fold_name(key)):  # a disguised name is reported as folded
            if is_plain_name(name):
                return f"{parent}.{name}" if parent else name
    return parent or "?"


# Top-level values that are one of a closed set of words hold no data to screen for.
_CLOSED_SETS: dict[str, frozenset[str]] = {**ENUMS, "type": frozenset(UPSTREAM_EVENTS)}


def _strings(event: Mapping[str, Any]) -> tuple[list[tuple[str, str]], list[tuple[str, Any, str]]]:
    """Every map key below the top level as (map's label, key), and every string value as
    (parent's label, key, text); iterative, since a hostile message may nest deeply. Labels
    are only computed for containers; a value's own label waits until it is refused."""
    keys: list[tuple[str, str]] = []
    texts: list[tuple[str, Any, str]] = []
    stack: list[tuple[str, Any, Any]] = [("", None, event)]
    while stack:
        parent, key, node = stack.pop()
        if isinstance(node, str):
            if not parent and node in _CLOSED_SETS.get(key, ()):
                continue
            if _RLO in node:  # screened as shown too: a reversed card is a card on screen
                texts.append((parent, key, _as_displayed(node)))
            texts.append((parent, key, node))
        elif isinstance(node, Mapping):
            where = parent if key is None else _label(parent, key)
            items = list(node.items())
            if where:  # the top level's keys are the schema's own field names
                for k, _ in items:
                    if isinstance(k, str):
                        if _RLO in k:  # first as shown, so a refusal names what a reader sees
                            keys.append((where, _as_displayed(k)))
                        keys.append((where, k))
            stack.extend((where, k, v) for k, v in reversed(items))
        elif isinstance(node, (list, tuple)):
            where = parent if key is None else _label(parent, key)
            stack.extend((where, None, v) for v in reversed(node))
    return keys, texts


class _Name(NamedTuple):
    """What a field name says, worked out once per name."""

    number: str  # a reason when the name holds a card, account or SSN itself, else ""
    folded: str  # as the policy's field table is asked
    special: bool  # special-category by the built-in word list
    words: str  # folded, camelCase split, words joined by "_": as the free-text fields are asked
    says: str  # "ssn", "routing" or "": what nine bare digits in this field are


_DIRTY = _Name("", "", False, "", "")
# Verdicts on field names without numbers in them, which repeat in every event ("email").
_CLEAN_NAMES: dict[str, _Name] = {}


def _name_verdict(name: str) -> _Name:
    """What one field name says; a name that holds a number itself says nothing else, since it
    is refused for that number first."""
    known = _CLEAN_NAMES.get(name)
    if known is not None:
        return known
    if contains_payment_card(name, glued=True):
        return _DIRTY._replace(number="payment_card")
    if contains_iban(name):
        return _DIRTY._replace(number="bank_account")
    if contains_us_ssn(name):
        return _DIRTY._replace(number="us_ssn")
    words = _name_words(name)
    joined = "".join(words)
    if "ssn" in words or "socialsecurity" in joined:
        says = "ssn"
    elif any(w.startswith("routing") or w in ("aba", "rtn", "abartn") for w in words):
        says = "routing"
    else:
        says = ""
    special = _names_special_category(words) or (_RLO in name and is_special_category_name(name))
    verdict = _Name("", fold_name(name), special, "_".join(words), says)
    if len(_CLEAN_NAMES) >= 4096:
        _CLEAN_NAMES.clear()
    _CLEAN_NAMES[name] = verdict
    return verdict


def _category_reason(category: str) -> str:
    cat = category.casefold()
    if "government_id" in cat:
        return "government_id"
    if "financial" in cat or "payment" in cat:
        if "card" in cat:
            return "payment_card"
        if "bank" in cat or "account" in cat:
            return "bank_account"
        return "financial_data"
    return "special_category"


_FREE_TEXT_EVENTS = frozenset({"DataCollected", "RectificationRequested"})


def screen(event: Mapping[str, Any], policy: GuardPolicy) -> Refusal | None:
    """The first reason this event must not be stored, or None.

    Order: the size (cheap, and it spares the scans below a megabyte of text), the purpose,
    then every map key (payment data in a name, a special-category name), then every string
    value (cards, IBANs, SSNs, routing numbers), then the free text of ``fields`` against the
    lexicon. Keys go first so that by the time a value is reported under ``fields.<name>``,
    that name is known to be clean; the lexicon last, as the only scan whose cost grows with
    the words of a text.
    """
    largest = _oversized(event)
    if largest:
        return Refusal("too_large", largest)
    purpose = event.get("purpose")
    kind = event.get("type")
    if "purpose" in event and not (isinstance(kind, str) and kind in PURPOSE_EXEMPT):
        if not isinstance(purpose, str):
            return Refusal("unknown_purpose", "purpose")
        reason = policy.purpose_refusal(purpose)
        if reason:
            return Refusal(reason, "purpose")
    keys, texts = _strings(event)
    for where, key in keys:
        name = _name_verdict(key)
        if name.number:
            return Refusal(name.number, where)
        category = policy.forbidden_field_category(name.folded)
        if category:
            return Refusal(_category_reason(category), _label(where, key))
        if name.special:
            return Refusal("special_category", _label(where, key))
    for parent, key, text in texts:
        if contains_payment_card(text):
            return Refusal("payment_card", _value_label(parent, key))
        if contains_iban(text):
            return Refusal("bank_account", _value_label(parent, key))
        reason = _number_reason(text, key) if len(text) >= 9 else ""
        if reason:
            return Refusal(reason, _value_label(parent, key))
    fields = event.get("fields")
    if isinstance(kind, str) and kind in _FREE_TEXT_EVENTS and isinstance(fields, Mapping):
        return _free_text(fields, policy)
    return None


def _free_text(fields: Mapping[Any, Any], policy: GuardPolicy) -> Refusal | None:
    """``special_category_text`` at the first free-text field whose text holds a lexicon term,
    read as stored and, if it holds a right-to-left override, as shown."""
    for key, text in fields.items():
        if not (isinstance(key, str) and isinstance(text, str)) or not text:
            continue
        lexicon = policy.free_text_lexicon(_name_verdict(key).words)
        if lexicon is None:
            continue
        if lexicon.category_in(text) or (_RLO in text and lexicon.category_in(_as_displayed(text))):
            return Refusal("special_category_text", _label("fields", key))
    return None


def _value_label(parent: str, key: Any) -> str:
    """Where a refused string sits: its own key under its parent, or the parent (a list)."""
    return (parent or "?") if key is None else _label(parent, key)


# --- size -----------------------------------------------------------------------------------

MAX_SEALED_BYTES = 512 * 1024
"""The most an event may take on ``lifecycle.events`` once its personal fields are sealed.

Kafka takes at most 1 MiB a message by default (producer and broker alike). An event that grows
past that when sealed cannot be written: the send fails, the worker stops, and since the input
offset never moves on, it stops again on every restart, with every subject behind it stalled.
Half of that limit, because the subject's state, which holds the sealed fields beside the
subject's other records, must still fit in one changelog message."""

_SEAL_OVERHEAD = 12 + 16  # AES-GCM nonce and tag around every sealed value


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _b64_size(n: int) -> int:
    return (4 * n + 2) // 3


def sealed_size(event: Mapping[str, Any]) -> int:
    """An upper bound on the event's Avro size once sealed: each value of ``fields`` grows by a
    nonce and a tag, is base64-encoded and names its data key (``<subject_id>/<event_id>``)."""
    return sum(_field_sizes(event).values())


def _field_sizes(event: Mapping[str, Any]) -> dict[str, int]:
    ids = (event.get("subject_id"), event.get("event_id"))
    key_id = sum(_utf8_size(t) for t in ids if isinstance(t, str)) + 1
    envelope = len("enc1:") + _b64_size(key_id) + 1 + 10  # + Avro length prefixes
    sizes: dict[str, int] = {}
    for name, value in event.items():
        size = 10
        if isinstance(value, str):
            size += _utf8_size(value)
        elif name == "fields" and isinstance(value, Mapping):
            for k, v in value.items():
                if isinstance(k, str) and isinstance(v, str):
                    size += _utf8_size(k) + envelope + _b64_size(_utf8_size(v) + _SEAL_OVERHEAD)
        sizes[str(name)] = size
    return sizes


def _quick_bound(event: Mapping[str, Any]) -> int | None:
    """An upper bound on ``sealed_size`` from the event's JSON length, which costs a fraction
    of summing the fields one by one; None when the event has no JSON form.

    Why it bounds: every string's UTF-8 bytes appear in the JSON at least once, so they sum to
    at most its length L; a value sealed grows by at most 4/3 of itself plus 38 bytes, and
    each field also carries an envelope (at most 18 + 4/3 L: the key id is two of the
    strings). Per top-level field, 10 bytes of Avro framing. 2 L and 64 leave a margin.
    """
    try:
        length = len(orjson.dumps(event))
    except TypeError:  # orjson.JSONEncodeError: a key or value JSON cannot hold
        return None
    fields = event.get("fields")
    n_fields = len(fields) if isinstance(fields, Mapping) else 0
    return 10 * len(event) + 2 * length + n_fields * (64 + 2 * length)


def _oversized(event: Mapping[str, Any]) -> str:
    """The field that takes most room when the event is too large to seal and send, or ""."""
    bound = _quick_bound(event)
    if bound is not None and bound <= MAX_SEALED_BYTES:
        return ""  # the usual event, a few hundred bytes
    sizes = _field_sizes(event)
    if sum(sizes.values()) <= MAX_SEALED_BYTES:
        return ""
    name = max(sizes, key=sizes.__getitem__)
    return name if is_plain_name(name) else "?"


# --- what a dead letter or a log line may repeat ----------------------------------------------


def future_time(event: Mapping[str, Any], received_at: int, skew_ms: int) -> Refusal | None:
    """Why an event stamped later than it arrived cannot be believed (``future_time``).

    ``received_at`` is the broker's clock (``lifecycle.ingest`` appends with LogAppendTime), not
    the producer's. An ``occurred_at`` past it, by more than ``skew_ms`` of honest clock drift,
    would let an upstream clock decide the law: a record stamped in the year 2999 keeps for a
    thousand years, an erasure request so stamped can never be late, an erasure verified "then"
    finds every tax record's obligation over and destroys it."""
    occurred = event.get("occurred_at")
    if isinstance(occurred, int) and occurred > received_at + skew_ms:
        return Refusal("future_time", "occurred_at")
    return None


def wrong_key(key: bytes | None, event: Mapping[str, Any]) -> Refusal | None:
    """Why the message's Kafka key disqualifies it: a message must be keyed by its subject_id.

    The key picks the partition, and only one partition per subject keeps a subject's events
    in order (the erasure after the data it erases). A message keyed otherwise, or not at all,
    may already have overtaken or fallen behind the subject's other events, which re-keying it
    here could not undo; so it is refused, and its key is never repeated (it may be an email).
    """
    subject = event.get("subject_id")
    if key is None:
        return Refusal("missing_key", "key")
    if not isinstance(subject, str) or key != subject.encode("utf-8", "surrogatepass"):
        return Refusal("key_mismatch", "key")
    return None


def echoable(text: object) -> str:
    """An id as a dead letter, its key or a log line may repeat it: unchanged, or "" when it
    holds a card or bank account number, a Social Security or routing number, or looks like an
    email address or phone number.

    Ids are opaque tokens by contract, but only ``subject_id`` is checked for contact data, and
    an event refused because its ``event_id`` is a card number or an SSN must not be
    dead-lettered under that number. A run of plain digits is kept: a sequence number, not a
    phone number.
    """
    if not isinstance(text, str):
        return ""
    if contains_payment_card(text, glued=True) or contains_iban(text) or _number_reason(text, None):
        return ""
    if not (text.isascii() and text.isdigit()) and looks_like_contact_data(text):
        return ""
    return text
