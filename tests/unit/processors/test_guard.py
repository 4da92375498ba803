"""The guard: every refusal rule, the disguises it sees through, and what it must let pass."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.guard import (
    PURPOSE_EXEMPT,
    Lexicon,
    Refusal,
    _quick_bound,
    contains_iban,
    contains_payment_card,
    contains_routing_number,
    contains_us_ssn,
    echoable,
    fold_name,
    is_special_category_name,
    lexicon_term,
    screen,
    sealed_size,
)
from schemas.contract import MAX_TEXT
from streams.settings import load_policy


def lexicon(terms: dict[str, list[str]]) -> Lexicon:
    return Lexicon([(category, lexicon_term(t)) for category, listed in terms.items() for t in listed])


class StubPolicy:
    """The three policy questions, answered from small tables; records what it was asked."""

    FIELDS: ClassVar[dict[str, str]] = {
        "health": "user.health_and_medical",
        "religion": "user.religious_belief",
        "card_number": "user.financial.credit_card",
        "iban": "user.financial.bank_account",
        "income": "user.financial",
    }
    PURPOSES: ClassVar[dict[str, str | None]] = {
        "inquiry": None,
        "newsletter": None,
        "marketing_email": None,
        "profiling": "forbidden_purpose",
        "data_sale": "forbidden_purpose",
    }

    FREE_TEXT: ClassVar[frozenset[str]] = frozenset({"message", "note", "cover_note"})
    LEXICON: ClassVar[Lexicon] = lexicon(
        {
            "user.health_and_medical": ["diagnosed with", "diabet*"],
            "user.demographic.religious_belief": ["my religion", "catholic"],
            "user.demographic.political_opinion": ["member of the * party"],
        }
    )

    def __init__(self) -> None:
        self.names: list[str] = []
        self.free_text_names: list[str] = []

    def forbidden_field_category(self, name: str) -> str | None:
        self.names.append(name)
        return self.FIELDS.get(name)

    def purpose_refusal(self, purpose: str) -> str | None:
        return self.PURPOSES.get(purpose, "unknown_purpose")

    def free_text_lexicon(self, name: str) -> Lexicon | None:
        self.free_text_names.append(name)
        return self.LEXICON if name in self.FREE_TEXT else None


class KnowsNothing:
    """A policy with an empty field table and no free text, to show the built-in rules alone."""

    def forbidden_field_category(self, name: str) -> str | None:
        return None

    def purpose_refusal(self, purpose: str) -> str | None:
        return None

    def free_text_lexicon(self, name: str) -> Lexicon | None:
        return None


POLICY = StubPolicy()
PACKAGED = load_policy()
"""The policy shipped with the package: its lexicon is what the free-text rules are about."""


def fullwidth(text: str) -> str:
    """ASCII as the fullwidth forms a phone keyboard in CJK mode types."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def math_bold(text: str) -> str:
    """Lowercase a-z as MATHEMATICAL BOLD SMALL letters."""
    return "".join(chr(0x1D41A + ord(c) - ord("a")) for c in text)


def arabic_indic(digits: str) -> str:
    return "".join(chr(0x0660 + int(d)) for d in digits)


CLEAN_FIELDS = {
    "email": "ada@example.com",
    "name": "Ada Lovelace",
    "phone": "+49 170 1234567",
    "phone_intl": "0049 1701 2345 6789",
    "order": "ORD-2026-0105-1234",
    "order_id": "1234567890123",  # 13 digits, fails Luhn
    "note": "please call after 5pm, ref 7 2026",
}


def collected(fields: dict[str, str] | None = None, /, **changes: Any) -> dict[str, Any]:
    return {
        "type": "DataCollected",
        "event_id": "41111111-1111-1111-a716-446655440000",  # uuid whose digit groups pass Luhn
        "subject_id": "subj-7f3a",
        "occurred_at": 1767607200000,
        "source": "web_form",
        "record_id": "rec-1",
        "category": "contact",
        "purpose": "inquiry",
        "legal_basis": "consent",
        "fields": dict(CLEAN_FIELDS) if fields is None else fields,
        **changes,
    }


def test_a_clean_event_passes() -> None:
    assert screen(collected(), POLICY) is None


def test_refusal_is_a_frozen_reason_and_place() -> None:
    refusal = Refusal("payment_card", "fields.note")
    with pytest.raises(dataclasses.FrozenInstanceError):
        refusal.reason = "x"  # type: ignore[misc]
    assert [f.name for f in dataclasses.fields(Refusal)] == ["reason", "field"]


# --- purposes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("purpose", "reason"),
    [
        ("profiling", "forbidden_purpose"),
        ("data_sale", "forbidden_purpose"),
        ("mystery", "unknown_purpose"),
    ],
)
def test_purposes_the_policy_refuses(purpose: str, reason: str) -> None:
    assert screen(collected(purpose=purpose), POLICY) == Refusal(reason, "purpose")
    consent = {"type": "ConsentGiven", "subject_id": "s", "purpose": purpose}
    assert screen(consent, POLICY) == Refusal(reason, "purpose")


@pytest.mark.parametrize("kind", sorted(PURPOSE_EXEMPT))
def test_stopping_a_forbidden_purpose_is_never_refused(kind: str) -> None:
    event = {"type": kind, "subject_id": "s", "request_id": "q", "purpose": "profiling"}
    assert screen(event, POLICY) is None


def test_a_purpose_that_is_not_text_is_unknown() -> None:
    assert screen(collected(purpose=None), POLICY) == Refusal("unknown_purpose", "purpose")


def test_events_without_purpose_are_not_asked_about_one() -> None:
    class Refuses(KnowsNothing):
        def purpose_refusal(self, purpose: str) -> str | None:
            raise AssertionError("asked")

    assert screen({"type": "ErasureRequested", "subject_id": "s", "request_id": "q"}, Refuses()) is None


# --- special categories ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason", "field"),
    [
        ("health", "special_category", "fields.health"),
        ("religion", "special_category", "fields.religion"),
        ("card_number", "payment_card", "fields.card_number"),
        ("iban", "bank_account", "fields.iban"),
        ("income", "financial_data", "fields.income"),
    ],
)
def test_field_names_the_policy_forbids(name: str, reason: str, field: str) -> None:
    assert screen(collected({"email": "a@b.example", name: "x"}), POLICY) == Refusal(reason, field)


DISGUISED = [
    ("H\u0435alth", "health"),  # CYRILLIC SMALL LETTER IE
    ("\u041d\u0415ALTH", "health"),  # CYRILLIC CAPITAL LETTER EN, IE
    ("h\u03b5alth", "health"),  # GREEK SMALL LETTER EPSILON
    ("rel\u200bigion", "religion"),  # zero-width space
    ("reli\u00adgion", "religion"),  # soft hyphen
    ("re\u2060ligion\ufeff", "religion"),  # word joiner, BOM
    (fullwidth("HEALTH"), "health"),
    (math_bold("health"), "health"),
    ("he\u0301alth", "health"),  # COMBINING ACUTE ACCENT
    ("h\u00e9alth", "health"),  # LATIN SMALL LETTER E WITH ACUTE
    ("RELIGION", "religion"),
    ("Religion", "religion"),
    ("r\u0435ligi\u03bfn", "religion"),  # CYRILLIC SMALL LETTER IE, GREEK SMALL LETTER OMICRON
]


@pytest.mark.parametrize(("name", "folded"), DISGUISED)
def test_disguised_field_names_fold_to_the_plain_name(name: str, folded: str) -> None:
    assert fold_name(name) == folded
    policy = StubPolicy()
    # Reported under the name as written when that is a plain identifier, else as folded.
    where = f"fields.{name}" if name.isascii() and name.isalpha() else f"fields.{folded}"
    assert screen(collected({name: "x"}), policy) == Refusal("special_category", where)
    assert folded in policy.names
    assert screen(collected({name: "x"}), KnowsNothing()) == Refusal("special_category", where)


SPECIAL_NAMES = [
    "race",
    "Race",
    "racial_origin",
    "ethnicity",
    "ethnic_origin",
    "religiousAffiliation",
    "religious_beliefs",
    "political_opinion",
    "politicalParty",
    "sexual_orientation",
    "sexLife",
    "sex_life",
    "health_status",
    "mentalHealth",
    "medical_history",
    "medications",
    "diagnosis",
    "disabilityStatus",
    "allergies",
    "pregnancy",
    "HIVStatus",
    "dna_sample",
    "genetic_data",
    "biometric_template",
    "trade_union_membership",
    "unionMember",
    "faith",
    "philosophical_beliefs",
    "blood_type",
    "vaccination_status",
    "sick_leave_days",
]
ORDINARY_NAMES = [
    "email",
    "name",
    "trace_id",
    "embrace",
    "grace_period",
    "racecar_team",
    "wealth",
    "orientation",
    "page_orientation",
    "third_party",
    "party_size",
    "company",
    "address_line_2",
    "stealth_mode",
    "union_id",
    "surname",
    "phone",
    "job_title",
    "zip",
    "medium",
    "utm_medium",
]


@pytest.mark.parametrize("name", SPECIAL_NAMES)
def test_built_in_word_list_catches_what_the_policy_does_not(name: str) -> None:
    assert is_special_category_name(name)
    refusal = screen(collected({name: "x"}), KnowsNothing())
    assert refusal is not None and refusal.reason == "special_category"
    assert refusal.field in (f"fields.{name}", f"fields.{fold_name(name)}")


@pytest.mark.parametrize("name", ORDINARY_NAMES)
def test_ordinary_field_names_pass(name: str) -> None:
    assert not is_special_category_name(name)
    assert screen(collected({name: "x"}), KnowsNothing()) is None


def rectification(fields: dict[str, str]) -> dict[str, Any]:
    return {"type": "RectificationRequested", "subject_id": "s", "request_id": "q", "record_id": "r", "fields": fields}


def test_rectification_is_screened_like_collection() -> None:
    assert screen(rectification({"diagnosis": "x"}), POLICY) == Refusal("special_category", "fields.diagnosis")


# --- special categories in free text --------------------------------------------------------

# What the packaged lexicon must find in a message, one case per kind of term: (text, category)
HEALTH, GENETIC = "user.health_and_medical", "user.health_and_medical.genetic"
RELIGION, ORIGIN = "user.demographic.religious_belief", "user.demographic.race_ethnicity"
POLITICS, ORIENTATION = "user.demographic.political_opinion", "user.demographic.sexual_orientation"
BIOMETRIC, CRIMINAL = "user.biometric", "user.criminal_history"
REVEALING = [
    ("I was diagnosed with diabetes last year", HEALTH),
    ("Type-2 diabetic, so no sugar at the workshop please", HEALTH),  # a stem, a hyphen
    ("Back in May after my chemotherapy", HEALTH),
    ("I am on maternity leave until March", HEALTH),
    ("She is pregnant and cannot travel", HEALTH),
    ("I use a wheelchair, is the office accessible?", HEALTH),
    ("Off work: sick leave since Monday", HEALTH),
    ("My GP says I should rest", HEALTH),
    ("Living with Crohn's since 2019", HEALTH),  # the apostrophe ends the word
    ("my BRCA1 result came back", GENETIC),
    ("My religion is Catholic, so Fridays are difficult", RELIGION),
    ("We will need halal catering", RELIGION),
    ("As a Jehovah\u2019s Witness I do not celebrate birthdays", RELIGION),  # typographic apostrophe
    ("Ethnic origin: mixed race", ORIGIN),
    ("member of the Green Party since 2015", POLITICS),
    ("Member of the Social Democratic Party (2010-2014)", POLITICS),  # "*": one to three words
    ("shop steward at my last job", POLITICS),
    ("my partner and I are gay", ORIENTATION),
    ("LGBTQ+ network lead", ORIENTATION),
    ("I enrolled my fingerprints at the bank", BIOMETRIC),
    ("I have no criminal record", CRIMINAL),  # a negation still speaks of the record
    ("convicted of fraud in 2012", CRIMINAL),
    ("The candidate has a clean DBS check", CRIMINAL),
    ("Sinn F\u00e9in volunteer", POLITICS),  # accents folded in the term and the text alike
]


@pytest.mark.parametrize(("text", "category"), REVEALING)
def test_free_text_revealing_a_special_category_is_refused(text: str, category: str) -> None:
    assert PACKAGED.free_text_lexicon("message") is not None
    assert PACKAGED.free_text_lexicon("message").category_in(text) == category  # type: ignore[union-attr]
    assert screen(collected({"email": "a@b.example", "message": text}), PACKAGED) == Refusal(
        "special_category_text", "fields.message"
    )


DISGUISED_TEXT = [  # "diabetes" is the only term in each
    "I have dia\u200bbetes",  # zero-width space
    "I have dia\u00adbetes",  # soft hyphen
    "I have dia\u3164betes",  # Hangul filler
    "I HAVE DIABETES",
    "I have " + fullwidth("diabetes"),
    "I have " + math_bold("diabetes"),
    "I have d\u0456ab\u0435tes",  # Cyrillic i and ie
    "I have diab\u03b5tes",  # Greek epsilon
    "I have dia\u0301betes",  # a combining accent
    "I have di\u00e1betes",  # an accented letter
    "I have \u202esetebaid\u202c",  # a right-to-left override: shown as "diabetes"
]
PHRASE_DISGUISED = [  # "diagnosed with" is the only term in each
    "I was diagnosed\u00a0with it",  # a no-break space between the words of a phrase
    "I was diagnosed\u200b with it",
    "I was " + fullwidth("diagnosed with") + " it",
    "I was \u202ehtiw desongaid\u202c it",
]


@pytest.mark.parametrize("text", DISGUISED_TEXT + PHRASE_DISGUISED)
def test_disguised_free_text_is_read_as_shown(text: str) -> None:
    assert screen(collected({"message": text}), PACKAGED) == Refusal("special_category_text", "fields.message")
    assert screen(collected({"message": text}), POLICY) == Refusal("special_category_text", "fields.message")


# Ordinary business English that holds a word of the lexicon's subjects in another sense, or
# a term's letters inside another word, and the numbers a message carries: all must pass.
ORDINARY_TEXT = [
    "The fundamental issue is latency",  # "mental" inside a word
    "A table for a party of four, please",
    "Our office is at Church Street 4",
    "We work in hospitality",  # not "hospitalised"
    "We install kiosks in hospital wards",
    "Unser Archiv ist online",  # "hiv" ends a word here, it does not start one
    "Dinner at the Gaylord hotel",  # "gay" starts a word, it is not one
    "The health check of the cluster fails",
    "The build is sick again, and a virus scan blocks the deploy",
    "I disabled the button for users with disabilities",
    "Can you diagnose the bug? It was diagnosed as a race condition",
    "We diagnosed, with the logs, a leak",  # a comma between the words of a phrase
    "Send it to Christian Dior's office",
    "Meeting with Mohammed Islam on Friday",
    "A conservative estimate is six weeks of labour",
    "The button in the far right corner",
    "The service is platform-agnostic",
    "Shipping to every member of the European Union",
    "Each union member of the struct is 4 bytes",
    "Our Black Friday sale and the white paper",
    "Offices in the United Arab Emirates and Germany; we speak German and Arabic",
    "The release came out as planned",
    "Use the prescribed format, with conviction",
    "The probation period is three months",
    "He said it with conviction: a member of the team",
    "Call +44 20 7946 0001 or +1 (212) 555-0147",
    "Order ORD-2026-0105-1234 of 2026-01-05, ref 41111111-1111-1111-a716-446655440000",
    "",
]


@pytest.mark.parametrize("text", ORDINARY_TEXT)
def test_ordinary_free_text_passes(text: str) -> None:
    assert screen(collected({"message": text, "note": text}), PACKAGED) is None


FREE_TEXT_NAMES = [
    ("message", "fields.message"),
    ("Message", "fields.Message"),
    ("notes", "fields.notes"),
    ("cv", "fields.cv"),
    ("CV", "fields.CV"),
    ("coverNote", "fields.coverNote"),  # ends in a listed name
    ("customer_message", "fields.customer_message"),
    ("cover-letter", "fields.cover-letter"),
    ("m\u0435ssage", "fields.message"),  # a Cyrillic ie: reported as folded
]
NOT_FREE_TEXT_NAMES = ["name", "company", "job_title", "note_id", "message_count", "city", "x"]


@pytest.mark.parametrize(("name", "where"), FREE_TEXT_NAMES)
def test_free_text_fields_are_named_by_the_policy(name: str, where: str) -> None:
    event = collected({"email": "a@b.example", name: "I was diagnosed with diabetes"})
    assert screen(event, PACKAGED) == Refusal("special_category_text", where)


@pytest.mark.parametrize("name", NOT_FREE_TEXT_NAMES)
def test_fields_that_are_not_free_text_are_not_read_for_words(name: str) -> None:
    assert screen(collected({name: "Diabetes Research Institute"}), PACKAGED) is None


def test_the_lexicon_is_the_policys() -> None:
    text = {"message": "I was diagnosed with diabetes"}
    assert screen(collected(text), KnowsNothing()) is None  # no free text, no lexicon: nothing built in
    policy = StubPolicy()
    assert screen(collected({"coverNote": "x", **text}), policy) == Refusal("special_category_text", "fields.message")
    assert policy.free_text_names == ["cover_note", "message"]  # asked by folded name, its words joined by "_"


@pytest.mark.parametrize(
    ("event", "refused"),
    [
        (collected({"message": "member of the Labour party"}), True),
        (rectification({"note": "my religion is ..."}), True),
        ({"type": "LegalHoldPlaced", "subject_id": "s", "hold_id": "h", "message": "diagnosed with diabetes"}, False),
        ({"type": "ConsentGiven", "subject_id": "s", "purpose": "inquiry", "fields": {"note": "diabetic"}}, False),
    ],
)
def test_free_text_is_read_in_collections_and_rectifications(event: dict[str, Any], refused: bool) -> None:
    where = "fields." + next(iter(event.get("fields", {"-": ""})))
    assert screen(event, POLICY) == (Refusal("special_category_text", where) if refused else None)


def test_payment_data_in_free_text_is_reported_as_payment_data() -> None:
    event = collected({"message": "diagnosed with diabetes, pay with 4111 1111 1111 1111"})
    assert screen(event, PACKAGED) == Refusal("payment_card", "fields.message")


@pytest.mark.parametrize(
    ("terms", "text", "found"),
    [
        (["member of the * party"], "member of the Green party", True),
        (["member of the * party"], "member of the Social Democratic Labour party", True),  # three words
        (["member of the * party"], "member of the Old Social Democratic Labour party", False),  # four
        (["member of the * party"], "member of the party", False),  # at least one
        (["diabet*"], "diabetic", True),
        (["diabet*"], "prediabetic", False),  # a stem starts a word
        (["diagnosed with"], "diagnosed   with", True),
        (["diagnosed with"], "diagnosed-with", True),
        (["diagnosed with"], "diagnosed. with", False),
        (["diagnosed with"], "diagnosed\n\nwith", True),
        (["crohn"], "crohn's", True),
        (["jehovah's witness"], "jehovah\u2019s witness", True),
        (["my doctor"], "my my doctor", True),  # a failed start does not hide the next one
        (["gay"], "gaylord", False),
    ],
)
def test_lexicon_matches_whole_words_and_phrases(terms: list[str], text: str, found: bool) -> None:
    assert (lexicon({"user.health_and_medical": terms}).category_in(text) is not None) is found


def test_lexicon_reports_the_category_of_the_first_term_in_the_text() -> None:
    lx = lexicon({"user.health_and_medical": ["diabetes"], "user.demographic.religious_belief": ["catholic"]})
    assert lx.category_in("catholic, with diabetes") == "user.demographic.religious_belief"
    assert lx.category_in("diabetes, and catholic") == "user.health_and_medical"


@pytest.mark.parametrize(
    ("term", "parts"),
    [
        ("Diagnosed  With", ("diagnosed", "with")),
        ("diabet*", ("diabet*",)),
        ("member of the * party", ("member", "of", "the", "*", "party")),
        ("jehovah's witness", ("jehovah", "s", "witness")),
        ("afro-caribbean", ("afro", "caribbean")),
        ("sinn f\u00e9in", ("sinn", "fein")),
        (fullwidth("HIV"), ("hiv",)),
    ],
)
def test_lexicon_terms_are_folded_into_parts(term: str, parts: tuple[str, ...]) -> None:
    assert lexicon_term(term) == parts


@pytest.mark.parametrize(
    ("term", "why"),
    [
        ("", "empty"),
        ("* party", "never first"),
        ("member of *", "never last"),
        ("member * * party", "twice"),
        ("dia*", "a stem is 4"),
        ("dia*betes", "never inside a word"),
        ("c++", "letters and digits"),
        ("one two three four five six seven eight nine", "more than 8"),
    ],
)
def test_lexicon_terms_that_cannot_match_are_refused(term: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        lexicon_term(term)


def test_the_lexicon_never_gives_back_what_it_took() -> None:
    """Why no text, however made, costs more than a bounded step per character: every repeat in
    the lexicon's expression is possessive or bounded (the wildcard's one to three words), so
    no attempt backtracks through what it read. What the worst text costs, the bench measures."""
    lx = PACKAGED.free_text_lexicon("message")
    assert lx is not None and lx._any is not None
    bare = re.sub(r"\[[^\]]*\]", "", re.sub(r"\\.", "", lx._any.pattern))  # escapes and classes out
    assert re.findall(r"[*+](?!\+)|\{\d*,\}", re.sub(r"[*+]\+", "", bare)) == []
    assert re.findall(r"\{(\d+),(\d+)\}", bare) == [("1", "3")] * len(re.findall(r"\{", bare))
    worst = ("member of the my " * (MAX_TEXT // 17))[:MAX_TEXT]  # every word a start, every "of the" a wildcard
    assert lx.category_in(worst) is None


# --- payment cards --------------------------------------------------------------------------

CARDS = [
    "4111111111111111",
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "4111.1111.1111.1111",
    "4111 - 1111 - 1111 - 1111",
    "4111\u200b1111\u200b1111\u200b1111",  # zero-width space
    "41\u200c11\u200d1111\u20601111\ufeff1111",  # ZWNJ, ZWJ, word joiner, BOM
    "4111\u00ad1111\u00ad1111\u00ad1111",  # soft hyphen
    fullwidth("4111 1111 1111 1111"),
    fullwidth("4111-1111-1111-1111"),  # fullwidth hyphen too
    "4111\u00a01111\u00a01111\u00a01111",  # no-break spaces
    "4111\u20131111\u20131111\u20131111",  # en dashes
    arabic_indic("4111111111111111"),
    "5555 5555 5555 4444",  # Mastercard
    "3782 822463 10005",  # Amex 4-6-5
    "30569309025904",  # Diners, 14 digits
    "4222222222222",  # Visa, 13 digits
    "4111111111111111110",  # 19 digits
    "6011111111111117",
    "card: 4111 1111 1111 1111, exp 12/27",
    "pay with 4111111111111111 123",  # card number then CVV
    "(4111111111111111)",
]
NOT_CARDS = [
    "4111 1111 1111 1112",  # fails Luhn
    "4111111111111112",
    "+49 170 1234567",
    "+4917012345678901",
    "0049 1701 2345 6789",
    "0000 0000 0000 0000",
    "1234567890123",  # 13 digits, fails Luhn
    "ORD-2026-0105-1234",
    "41111111111111111",  # 17 digits, fails Luhn
    "411111111111111111111111",  # 24 digits: not a card length
    "ab4111111111111111",  # glued to letters: part of a hex id
    "41111111-1111-1111-a716-446655440000",  # uuid
    "2026-01-05 10:00:00",
    "",
]


@pytest.mark.parametrize("text", CARDS)
def test_card_numbers_are_found_however_written(text: str) -> None:
    assert contains_payment_card(text)
    assert screen(collected({"note": text}), POLICY) == Refusal("payment_card", "fields.note")


@pytest.mark.parametrize("text", NOT_CARDS)
def test_digit_runs_that_fail_luhn_pass(text: str) -> None:
    assert not contains_payment_card(text)
    assert screen(collected({"note": text}), POLICY) is None


@pytest.mark.parametrize(
    "text", ["4111 1111 1111 1111", fullwidth("4111111111111111"), "\u200b".join(["4111", "1111", "1111", "1111"])]
)
def test_card_numbers_in_field_names_are_refused_without_naming_the_field(text: str) -> None:
    assert screen(collected({text: "x"}), POLICY) == Refusal("payment_card", "fields")
    assert screen(collected({f"card {text}": "x"}), POLICY) == Refusal("payment_card", "fields")


@pytest.mark.parametrize("field", ["source", "record_id", "event_id"])
def test_card_numbers_anywhere_in_the_event(field: str) -> None:
    assert screen(collected(**{field: "4111 1111 1111 1111"}), POLICY) == Refusal("payment_card", field)


# --- bank accounts --------------------------------------------------------------------------

IBANS = [
    "DE89370400440532013000",
    "DE89 3704 0044 0532 0130 00",
    "de89 3704 0044 0532 0130 00",
    "GB82 WEST 1234 5698 7654 32",
    "NL91ABNA0417164300",
    "FR14 2004 1010 0505 0001 3M02 606",
    "BE68539007547034",
    "NO9386011117947",
    "CH9300762011623852957",
    "DE89\u200b3704\u200b0044\u200b0532\u200b0130\u200b00",
    fullwidth("DE89370400440532013000"),
    "IBAN: DE89370400440532013000.",
    "transfer to NL91 ABNA 0417 1643 00 please",
]
NOT_IBANS = [
    "DE88370400440532013000",  # wrong check digits
    "GB82WEST12345698765433",
    "DE8937040044053201300",  # one short
    "DE893704004405320130001",  # one long
    "ZZ89370400440532013000",  # no such country
    "Gb82WeSt12345698765432",  # mixed case: a token, not something typed from a bank card
    "xDE89370400440532013000",
    "DE 89",
]


@pytest.mark.parametrize("text", IBANS)
def test_valid_ibans_are_refused(text: str) -> None:
    assert contains_iban(text)
    assert screen(collected({"note": text}), POLICY) == Refusal("bank_account", "fields.note")


@pytest.mark.parametrize("text", NOT_IBANS)
def test_strings_failing_the_iban_check_pass(text: str) -> None:
    assert not contains_iban(text)
    assert screen(collected({"note": text}), POLICY) is None


def test_ibans_in_field_names_are_refused_without_naming_the_field() -> None:
    assert screen(collected({"DE89370400440532013000": "x"}), POLICY) == Refusal("bank_account", "fields")


# --- BICs -----------------------------------------------------------------------------------

BICS = ["DEUTDEFF500", "DEUTDEFF", "NWBKGB2L", "BNPAFRPPXXX", "COBADEFFXXX", "BIC: DEUTDEFF500, IBAN to follow"]


@pytest.mark.parametrize("text", BICS)
def test_a_bic_names_a_bank_not_an_account_and_passes(text: str) -> None:
    assert not contains_iban(text) and not contains_payment_card(text)
    for name in ("swift", "bic", "swift_code", "SWIFT/BIC", "bankBic", "note"):
        assert screen(collected({"name": "Ada", name: text}), PACKAGED) is None, name


# --- US Social Security numbers -------------------------------------------------------------

SSNS = [
    "123-45-6789",
    "123 45 6789",
    "123 - 45 - 6789",  # three separators between two digits, the most a number may have
    "my SSN is 123-45-6789.",
    "123\u201345\u20136789",  # en dashes
    "123\u200b-45-6789",  # zero-width space
    fullwidth("123-45-6789"),
    arabic_indic("123") + "-" + arabic_indic("45") + "-" + arabic_indic("6789"),
    "SSN: 123456789",  # any grouping once the words before it say SSN
    "social security number 123.45.6789",
    "Social Security No. 123 456 789",
    "(123-45-6789)",
]
NOT_SSNS = [
    "123456789",  # nine bare digits: an order id as much as an SSN
    "order 123456789",
    "123.45.6789",  # dotted: a version or a part number
    "000-12-3456",  # area 000 is never issued
    "666-12-3456",
    "900-12-3456",  # 900-999: never issued
    "987-65-4321",
    "123-00-4567",  # group 00
    "123-45-0000",  # serial 0000
    "555-123-4567",  # a phone number, 3-3-4
    "+1 212 555 0147",
    "(212) 555-0147",
    "+45 123-45-6789",  # after a country code: a phone number
    "tel. +123 45 6789",  # nine digits after "+": a phone number
    "0049 123 45 6789",  # part of a longer number
    "2026-01-05",
    "05-01-2026",
    "ORD-123-45-6789",  # joined to letters: part of an id
    "123-45-6789-b",
    "x123-45-6789",
    "41111111-1111-1111-a716-446655440000",
    "1234-56-7890",
]


@pytest.mark.parametrize("text", SSNS)
def test_us_social_security_numbers_are_refused(text: str) -> None:
    assert contains_us_ssn(text)
    assert screen(collected({"email": "a@b.example", "note": text}), POLICY) == Refusal("us_ssn", "fields.note")


@pytest.mark.parametrize("text", NOT_SSNS)
def test_nine_digits_that_are_not_an_issuable_ssn_in_its_grouping_pass(text: str) -> None:
    assert not contains_us_ssn(text)
    assert screen(collected({"email": "a@b.example", "note": text}), POLICY) is None


@pytest.mark.parametrize(
    ("name", "value", "refused"),
    [
        ("ssn", "123456789", True),
        ("SSN", "123 456 789", True),
        ("customer_ssn", "123.45.6789", True),
        ("socialSecurityNo", "123456789", True),
        ("social_security", "12-345-6789", True),
        ("ssn", "000000000", False),  # not issuable, whatever the name says
        ("ssn", "666123456", False),
        ("order_id", "123456789", False),
        ("phone", "123456789", False),
        ("lessons", "123456789", False),  # "ssn" inside a word is not the word
    ],
)
def test_a_field_named_ssn_holds_an_ssn_however_written(name: str, value: str, refused: bool) -> None:
    assert screen(collected({name: value}), KnowsNothing()) == (Refusal("us_ssn", f"fields.{name}") if refused else None)


@pytest.mark.parametrize("name", ["ssn", "SSN", "social_security_number", "socialSecurityNumber", "customer_ssn"])
def test_the_policy_forbids_national_id_field_names(name: str) -> None:
    assert screen(collected({name: "x"}), PACKAGED) == Refusal("government_id", f"fields.{name}")


@pytest.mark.parametrize("field", ["source", "record_id", "event_id"])
def test_ssns_anywhere_in_the_event(field: str) -> None:
    assert screen(collected(**{field: "123-45-6789"}), POLICY) == Refusal("us_ssn", field)


def test_ssns_in_field_names_are_refused_without_naming_the_field() -> None:
    assert screen(collected({"123-45-6789": "x"}), POLICY) == Refusal("us_ssn", "fields")


@pytest.mark.parametrize("number", ["123-45-6789", "123\u201345\u20136789", "ssn:123456789", "aba:021000021"])
def test_an_id_refused_for_its_number_is_never_repeated(number: str) -> None:
    """The dead letter, its key and the log line name the event by its id: not by this one."""
    refusal = screen(collected(event_id=number), POLICY)
    assert refusal is not None and refusal.field == "event_id"
    assert echoable(number) == ""


@pytest.mark.parametrize("ident", ["e-000000001", "123456789", "41111111-1111-1111-a716-446655440000"])
def test_ids_that_hold_no_number_are_repeated(ident: str) -> None:
    assert echoable(ident) == ident


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**9 - 1), st.sampled_from(["{}", "order {}", "call {} today", "ref {}.", "id: {}"]))
def test_nine_bare_digits_without_a_name_saying_what_they_are_pass(number: int, shape: str) -> None:
    text = shape.format(f"{number:09d}")
    assert screen(collected({"note": text, "message": text}), PACKAGED) is None


EDGES = ["", " ", "a", "x", "+", "-", ".", "_", "/", " a", "a ", "-a", "a-", ".x", "x.", " +", "+ "]
NUMBERISH = st.one_of(
    st.from_regex(r"[ a+x_.\-]{0,3}[0-9]{1,4}(?:[ ._/\-]{0,3}[0-9]{1,4}){0,4}[ a+x_.\-]{0,3}", fullmatch=True),
    # issuable SSNs in their 3-2-4 grouping, between what may stand before and after one
    st.tuples(
        st.sampled_from(["ssn ", "ssn:", *EDGES]),
        st.from_regex(r"[1-8][0-9]{2}[ \-]{1,3}[1-9][0-9][ \-]{1,3}[1-9][0-9]{3}", fullmatch=True),
        st.sampled_from(EDGES),
    ).map("".join),
)


@settings(max_examples=500, deadline=None)
@given(NUMBERISH)
def test_the_screen_finds_an_ssn_exactly_where_a_close_look_does(text: str) -> None:
    """The screen skips values without nine lone digits by one quick pattern; that pattern may
    let through what is no SSN, never keep back what is one."""
    if contains_payment_card(text) or contains_iban(text):
        return
    refused = screen(collected({"note": text}), KnowsNothing()) == Refusal("us_ssn", "fields.note")
    assert refused == contains_us_ssn(text)


# --- ABA routing numbers --------------------------------------------------------------------

ROUTING = [
    "routing 021000021",
    "Routing number: 021000021",
    "my routing number is 011000015",
    "ABA 021000021",
    "ABA/RTN #021000021",
    "021000021 (ABA)",
    "RTN: 0210 0002 1",
    "routing " + fullwidth("021000021"),
    "r\u043euting 021000021",  # a Cyrillic o
]
NOT_ROUTING = [
    "021000021",  # no word says routing: it passes the checksum as one number in ten does
    "order 021000021",
    "call 021000021",
    "routing 021000022",  # fails the checksum
    "routing 131000021",  # passes it, but no routing number starts with 13
    "routing 000000000",
    "rerouting 021000021",  # "routing" inside another word
    "routing +1 021000021",  # after a country code: a phone number
    "routing 0210000210",  # ten digits
    "ABA021000021",  # glued to letters: part of a token
    "rerouting" + " " * 33 + "021000021",  # the words before are read whole: "re|routing" is not "routing"
    "021000021" + " " * 17 + "routingtable",  # and the words after: "routing|table" is not "routing"
]


@pytest.mark.parametrize("text", ROUTING)
def test_routing_numbers_beside_their_name_are_refused(text: str) -> None:
    assert contains_routing_number(text)
    assert screen(collected({"email": "a@b.example", "note": text}), POLICY) == Refusal("bank_account", "fields.note")


@pytest.mark.parametrize("text", NOT_ROUTING)
def test_nine_digits_without_a_routing_name_or_checksum_pass(text: str) -> None:
    assert not contains_routing_number(text)
    assert screen(collected({"email": "a@b.example", "note": text}), POLICY) is None


@pytest.mark.parametrize(
    ("name", "value", "refused"),
    [
        ("aba", "021000021", True),
        ("bankRouting", "021000021", True),
        ("routing", "0210-0002-1", True),
        ("rtn", "011000015", True),
        ("aba", "021000022", False),
        ("order_id", "021000021", False),
        ("phone", "021000021", False),
        ("database", "021000021", False),  # "aba" inside a word is not the word
    ],
)
def test_a_field_named_routing_holds_a_routing_number(name: str, value: str, refused: bool) -> None:
    expected = Refusal("bank_account", f"fields.{name}") if refused else None
    assert screen(collected({name: value}), KnowsNothing()) == expected


def aba_valid(digits: str) -> bool:
    d = [int(c) for c in digits]
    return (3 * (d[0] + d[3] + d[6]) + 7 * (d[1] + d[4] + d[7]) + d[2] + d[5] + d[8]) % 10 == 0


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**9 - 1))
def test_a_number_beside_routing_is_refused_exactly_when_it_could_be_one(number: int) -> None:
    digits = f"{number:09d}"
    prefix = int(digits[:2])
    plausible = (
        aba_valid(digits) and digits != "000000000" and (prefix <= 12 or 21 <= prefix <= 32 or 61 <= prefix <= 72 or prefix == 80)
    )
    assert contains_routing_number(f"routing: {digits}") == plausible
    assert not contains_routing_number(digits)


# --- no refusal carries the value -----------------------------------------------------------

OFFENDING = [
    ({"note": "4111 1111 1111 1111"}, "4111"),
    ({"4111 1111 1111 1111": "x"}, "4111"),
    ({"card4111111111111111": "x"}, "4111"),
    ({"note": "DE89 3704 0044 0532 0130 00"}, "3704"),
    ({"DE89370400440532013000": "x"}, "DE89"),
    ({"iban_DE89370400440532013000": "x"}, "DE89"),
    ({"health 4111 1111 1111 1111": "x"}, "4111"),
    ({"health4111111111111111": "diabetes"}, "4111"),
    ({"H\u0435alth": "diabetes"}, "diabetes"),
    ({"religion": "catholic"}, "catholic"),
    ({"message": "I was diagnosed with diabetes"}, "diabet"),
    ({"message": "my religion is Catholic"}, "catholic"),
    ({"note": "member of the Green party"}, "green"),
    ({"note": "SSN 123-45-6789"}, "6789"),
    ({"note": "routing 021000021"}, "21000"),
]


@pytest.mark.parametrize(("fields", "secret"), OFFENDING)
def test_no_refusal_contains_the_offending_value(fields: dict[str, str], secret: str) -> None:
    refusal = screen(collected(fields), POLICY)
    assert refusal is not None
    for text in (refusal.reason, refusal.field, repr(refusal)):
        assert secret.casefold() not in text.casefold()
        assert not re.search(r"\d{5}", text)


# --- properties -----------------------------------------------------------------------------

tricky_text = st.text(
    alphabet=st.sampled_from("0123456789 -.\u200b\u00ad\uff14\u0664ABDEGNabde@+\u0435\u00e9_"),
    max_size=40,
)
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.binary(max_size=8) | st.text() | tricky_text,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.one_of(st.text(max_size=12), tricky_text, st.integers()), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["type", "purpose", "fields", "source", "x"]), values, max_size=5))
def test_guard_never_raises(event: dict[str, Any]) -> None:
    refusal = screen(event, POLICY)
    assert refusal is None or isinstance(refusal, Refusal)


WHOLE_TERMS = sorted({t for listed in PACKAGED.lexicon_terms.values() for t in listed if "*" not in t})
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u3164", "\u034f", "\ufe0f"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(WHOLE_TERMS), st.data())
def test_every_term_is_found_through_invisible_characters_and_case(term: str, data: st.DataObject) -> None:
    out = []
    for c in term:
        out.append(c.upper() if data.draw(st.booleans()) else c)
        if data.draw(st.integers(0, 3)) == 0:
            out.append(data.draw(st.sampled_from(INVISIBLE)))
    text = f"Hello, {''.join(out)}. Thanks"
    refusal = screen(collected({"message": text}), PACKAGED)
    assert refusal == Refusal("special_category_text", "fields.message")
    assert term.casefold() not in repr(refusal).casefold()


@settings(max_examples=200, deadline=None)
@given(st.integers(10**12, 10**19 - 1))
def test_a_digit_run_is_refused_exactly_when_it_passes_luhn(number: int) -> None:
    digits = str(number)
    total = sum((int(d) * 2 - 9 if int(d) * 2 > 9 else int(d) * 2) if i % 2 else int(d) for i, d in enumerate(reversed(digits)))
    assert contains_payment_card(digits) == (total % 10 == 0)
    if total % 10 == 0:  # grouped, a part may pass Luhn where the whole fails; never the reverse
        assert contains_payment_card(" ".join(re.findall(".{1,4}", digits)))


@settings(max_examples=300, deadline=None)
@given(
    st.text(min_size=1, max_size=300),
    st.text(min_size=1, max_size=300),
    st.dictionaries(st.text(max_size=60), st.text(max_size=400), max_size=12),
    st.sampled_from(["", "\U0001f600", "\u00e9", "\u0800", '"']),
)
def test_the_quick_size_bound_never_undercounts_a_sealed_event(
    subject: str, event_id: str, fields: dict[str, str], wide: str
) -> None:
    """The screen lets an event through on the quick bound alone; an event it lets through must
    still fit once sealed, whatever its text is made of (4-byte characters, escapes)."""
    fields = {k: v + wide * 50 for k, v in fields.items()}
    event = {"type": "DataCollected", "subject_id": subject + wide, "event_id": event_id, "source": wide * 20, "fields": fields}
    bound = _quick_bound(event)
    assert bound is not None and bound >= sealed_size(event)
