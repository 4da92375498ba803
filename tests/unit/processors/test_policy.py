"""The policy file: the packaged one loads and names only what the Fides taxonomy knows, and a
broken file fails loudly with the key at fault (a silent typo would widen what is allowed)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from fideslang.default_taxonomy import DEFAULT_TAXONOMY

import processors
from processors.guard import Lexicon
from processors.policy import LEGAL_BASES, Policy, PolicyError, add_months, normalize_field_name, parse_policy
from streams.settings import load_policy

PACKAGED = Path(processors.__file__).parent / "policy.toml"
CATEGORIES = {c.fides_key for c in DEFAULT_TAXONOMY.data_category}
USES = {u.fides_key for u in DEFAULT_TAXONOMY.data_use}


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


def packaged_text() -> str:
    return PACKAGED.read_text(encoding="utf-8")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------
# the packaged policy
# --------------------------------------------------------------------------------------


def test_packaged_policy_loads_once_and_from_a_path_alike(policy: Policy) -> None:
    assert load_policy() is policy  # loaded once
    again = load_policy(PACKAGED)
    assert again.purposes.keys() == policy.purposes.keys()
    assert again.consumer_names == policy.consumer_names


def test_packaged_policy_has_the_promised_values(policy: Policy) -> None:
    assert policy.no_relationship_months == 12
    assert policy.post_contract_years == 6
    assert policy.deadline_months == 1
    assert policy.extension_months == 2
    assert policy.max_days == 90 and policy.verification_wait_days == 21
    assert [p for p, purpose in policy.purposes.items() if purpose.obligation] == ["invoicing"]
    for name in (
        "marketing_email",
        "newsletter",
        "analytics_cookies",
        "inquiry",
        "recruitment",
        "invoicing",
        "service_delivery",
        "crm",
    ):
        assert policy.purposes[name].forbidden is None
        assert set(policy.purposes[name].legal_bases) <= set(LEGAL_BASES)
        assert set(policy.purposes[name].categories) <= set(policy.categories)
    assert policy.purposes["marketing_email"].data_use == "marketing.communications.email"
    assert set(policy.channels["email"]) == {"marketing_email", "newsletter", "crm"} == set(policy.direct_marketing)
    assert policy.purposes["crm"].legal_bases == ("legitimate_interest",)
    assert {p.forbidden for p in policy.purposes.values()} >= {"profiling", "automated_decision", "sale"}
    assert set(policy.categories) >= {"contact", "billing", "employment", "analytics", "third_party"}
    assert set(policy.consumer_names) >= {"crm-mirror", "mailer", "warehouse"}
    for c in policy.consumers:
        assert c.role in ("processor", "controller") and c.region and c.purposes
    assert policy.consumers_of["recruitment"] == ("ats",) and policy.consumers_of["crm"] == ("crm-mirror", "mailer")


def test_every_name_in_the_packaged_policy_is_in_the_fideslang_taxonomy(policy: Policy) -> None:
    for p in policy.purposes.values():
        assert p.data_use in USES, p.name
    for c in policy.categories.values():
        assert c.data_category in CATEGORIES, c.name
    for field, category in policy.fields.items():
        assert category in CATEGORIES, field
    for category in policy.forbidden_categories:
        assert category in CATEGORIES
    for use in policy.forbidden_uses:
        assert use in USES
    for category in policy.lexicon_terms:
        assert category in CATEGORIES


def test_forbidden_list_is_the_special_category_and_financial_subtrees(policy: Policy) -> None:
    for root in (
        "user.health_and_medical",
        "user.demographic.race_ethnicity",
        "user.demographic.religious_belief",
        "user.demographic.political_opinion",
        "user.demographic.sexual_orientation",
        "user.financial",
    ):
        assert root in policy.forbidden_categories
    assert policy.is_forbidden_category("user.financial.credit_card")
    assert policy.is_forbidden_category("user.health_and_medical.genetic")
    assert not policy.is_forbidden_category("user.contact.email")
    assert not policy.is_forbidden_category("user.payment")  # billing details are allowed
    for c in policy.categories.values():
        assert not policy.is_forbidden_category(c.data_category)


def test_national_identification_numbers_are_forbidden_and_other_government_ids_are_not(policy: Policy) -> None:
    assert policy.is_forbidden_category("user.government_id.national_identification_number")
    assert not policy.is_forbidden_category("user.government_id.passport_number")  # a right-to-work check


def test_the_lexicon_covers_every_special_category(policy: Policy) -> None:
    assert set(policy.lexicon_terms) >= {
        "user.health_and_medical",
        "user.demographic.religious_belief",
        "user.demographic.race_ethnicity",
        "user.demographic.political_opinion",
        "user.demographic.sexual_orientation",
        "user.biometric",
        "user.criminal_history",
    }
    for category, terms in policy.lexicon_terms.items():
        assert policy.is_forbidden_category(category), category
        assert len(terms) >= 5, category


# --------------------------------------------------------------------------------------
# the guard's three questions
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "category"),
    [
        ("health", "user.health_and_medical"),
        ("Health", "user.health_and_medical"),
        ("HealthStatus", "user.health_and_medical"),
        ("medical-condition", "user.health_and_medical"),
        ("religion", "user.demographic.religious_belief"),
        ("ethnicity", "user.demographic.race_ethnicity"),
        ("ethnic origin", "user.demographic.race_ethnicity"),
        ("political.views", "user.demographic.political_opinion"),
        ("sexual_orientation", "user.demographic.sexual_orientation"),
        ("card_number", "user.financial.credit_card"),
        ("Card-Number", "user.financial.credit_card"),
        ("cardNumber", "user.financial.credit_card"),
        ("card\u200bnumber", "user.financial.credit_card"),  # zero-width space
        ("\ufeffiban", "user.financial.bank_account"),  # byte order mark
        ("ＩＢＡＮ", "user.financial.bank_account"),  # full-width
        ("customer_iban", "user.financial.bank_account"),
        ("creditcard", "user.financial.credit_card"),
        ("bank account", "user.financial.bank_account"),
        ("routing_number", "user.financial.bank_account"),
        ("ssn", "user.government_id.national_identification_number"),
        ("social_security_number", "user.government_id.national_identification_number"),
        ("SocialSecurityNumber", "user.government_id.national_identification_number"),
        ("customer_ssn", "user.government_id.national_identification_number"),
    ],
)
def test_forbidden_field_names_map_to_their_fides_category(policy: Policy, name: str, category: str) -> None:
    assert policy.forbidden_field_category(name) == category


@pytest.mark.parametrize(
    "name",
    [
        "email", "name", "phone", "company", "job_title", "ip_address", "cv", "billing_address", "vat_id", "trace_id", "x",
        "swift", "bic", "SWIFT/BIC", "swift_code", "bank_bic", "lessons",
    ],
)  # fmt: skip
def test_ordinary_field_names_are_not_forbidden(policy: Policy, name: str) -> None:
    assert policy.forbidden_field_category(name) is None


@pytest.mark.parametrize(
    ("name", "free"),
    [
        ("message", True),
        ("Message", True),
        ("cv", True),
        ("resume", True),
        ("note", True),
        ("notes", True),
        ("description", True),
        ("comment", True),
        ("bio", True),
        ("summary", True),
        ("cover_note", True),  # ends in a listed name
        ("customerMessage", True),
        ("job-description", True),
        ("cover letter", True),
        ("message_id", False),  # a message id is an id
        ("note_count", False),
        ("notebook", False),
        ("name", False),
        ("company", False),
        ("email", False),
    ],
)
def test_free_text_fields_are_the_listed_names_and_names_ending_in_them(policy: Policy, name: str, free: bool) -> None:
    lexicon = policy.free_text_lexicon(name)
    assert (lexicon is not None) is free
    assert lexicon is None or isinstance(lexicon, Lexicon)


def test_normalisation_folds_disguises() -> None:
    assert normalize_field_name(" Card--Number ") == "card_number"
    assert normalize_field_name("card\u00adnumber") == "cardnumber"  # soft hyphen is a format char
    assert normalize_field_name("ＨＥＡＬＴＨ") == "health"
    assert normalize_field_name("Straße") == "strasse"


@pytest.mark.parametrize(
    ("purpose", "refusal"),
    [
        ("newsletter", None),
        ("invoicing", None),
        ("profiling", "forbidden_purpose"),
        ("lead_scoring", "forbidden_purpose"),
        ("data_sale", "forbidden_purpose"),
        ("nope", "unknown_purpose"),
        ("Newsletter", "unknown_purpose"),
    ],
)
def test_purpose_refusal(policy: Policy, purpose: str, refusal: str | None) -> None:
    assert policy.purpose_refusal(purpose) == refusal


# --------------------------------------------------------------------------------------
# calendar arithmetic
# --------------------------------------------------------------------------------------


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("start", "months", "end"),
    [
        ("2024-01-15T10:00:00", 12, "2025-01-15T10:00:00"),
        ("2024-01-31T10:00:00", 1, "2024-02-29T10:00:00"),  # leap year clamp
        ("2023-01-31T10:00:00", 1, "2023-02-28T10:00:00"),
        ("2024-02-29T00:00:00", 12, "2025-02-28T00:00:00"),
        ("2024-12-31T23:59:59.999", 1, "2025-01-31T23:59:59.999"),
        ("2024-03-31T08:00:00", 72, "2030-03-31T08:00:00"),
        ("1969-12-31T12:00:00", 1, "1970-01-31T12:00:00"),
    ],
)
def test_add_months_is_calendar_months_on_utc_dates(start: str, months: int, end: str) -> None:
    assert add_months(ms(start), months) == ms(end)
    assert add_months(ms(start), months) == ms(end)  # and again, from the memo


# --------------------------------------------------------------------------------------
# invalid files fail with the key in the message
# --------------------------------------------------------------------------------------


def test_bad_legal_basis_names_the_key_and_the_choices(tmp_path: Path) -> None:
    text = packaged_text().replace(
        '[purposes.newsletter]\ndescription = "Newsletter subscription (the policy\'s own example of consent)"\n'
        'data_use = "marketing.communications.email"\nlegal_bases = ["consent"]',
        '[purposes.newsletter]\ndata_use = "marketing.communications.email"\nlegal_bases = ["maybe"]',
    )
    assert '"maybe"' in text
    with pytest.raises(PolicyError) as err:
        load_policy(write(tmp_path, text))
    assert str(err.value) == ("purposes.newsletter.legal_bases[0]: 'maybe' is not a legal basis of this policy")


@pytest.mark.parametrize(
    ("old", "new", "key", "why"),
    [
        (
            'data_use = "essential.service.operations.support"',
            'data_use = "essential.service.support"',
            "purposes.inquiry.data_use",
            "not a data use of the Fides taxonomy",
        ),
        (
            'data_category = "user.behavior"',
            'data_category = "user.behaviour"',
            "categories.analytics.data_category",
            "not a data category",
        ),
        ('email = "user.contact.email"', 'email = "user.contact.mail"', "fields.email", "not a data category"),
        ('    "user.financial",\n', '    "user.finance",\n', "forbidden.data_categories[8]", "not a data category"),
        ("no_relationship_months = 12\n", "", "retention.no_relationship_months", "missing"),
        ("deadline_months = 1\n", 'deadline_months = "one"\n', "requests.deadline_months", "expected int"),
        (
            'role = "processor"\nregion = "us-east"',
            'role = "subprocessor"\nregion = "us-east"',
            "consumers.mailer.role",
            "not one of processor, controller",
        ),
        (
            'channel = "email"\n\n[purposes.newsletter]',
            'chanel = "email"\n\n[purposes.newsletter]',
            "purposes.marketing_email.chanel",
            "unknown key",
        ),
        (
            'categories = ["billing"]\nobligation = true',
            'categories = ["invoices"]\nobligation = true',
            "purposes.invoicing.categories[0]",
            "not a category",
        ),
        (
            'legal_bases = ["contract", "legal_obligation"]',
            'legal_bases = ["contract"]',
            "purposes.invoicing.obligation",
            "exactly when `legal_obligation` is among its legal_bases",
        ),
        (
            'legal_bases = ["legitimate_interest"]\ncategories = ["contact", "third_party"]\ndirect_marketing = true',
            'legal_bases = ["contract"]\ncategories = ["contact", "third_party"]\ndirect_marketing = true',
            "purposes.crm.legal_bases",
            "consent or a legitimate interest only",
        ),
        (
            'direct_marketing = true\nchannel = "email"\n\n[purposes.newsletter]',
            'channel = "email"\n\n[purposes.newsletter]',
            "purposes.marketing_email.channel",
            "a direct-marketing purpose names its channel",
        ),
        (
            'purposes = ["recruitment"]\nmax_months = 6',
            'purposes = ["hiring"]',
            "relationships.applicant.purposes[0]",
            "not a purpose",
        ),
        ("[relationships.partner]", "[relationships.friend]", "relationships.friend", "not a relationship kind"),
        ('regimes = ["gdpr", "us_state_privacy"]', 'regimes = ["gdpr", "ccpa"]', "requests.regimes[1]", "not a regime"),
        ("# max_days = 90", "max_days = 92", "requests.max_days", "exceeds the 90 days"),
        ("verification_wait_days = 21", "verification_wait_days = 40", "requests.verification_wait_days", "within the first"),
        (
            'region = "eu-west"\npurposes = ["analytics_cookies"]',
            'region = "eu-west"\ntransfer = "standard_contractual_clauses"\npurposes = ["analytics_cookies"]',
            "consumers.warehouse.transfer",
            "in the EU",
        ),
        (
            'transfer = "standard_contractual_clauses"\npurposes = ["inquiry"',
            'purposes = ["inquiry"',
            "consumers.crm-mirror.transfer",
            "needs a safeguard",
        ),
        (
            'region = "us-east"\ntransfer = "eu_us_data_privacy_framework"',
            'region = "in-west"\ntransfer = "eu_us_data_privacy_framework"',
            "consumers.mailer.transfer",
            "US only",
        ),
        (
            'region = "us-east"\ntransfer = "eu_us_data_privacy_framework"',
            'region = "us-east"\ntransfer = "data_processing_agreement"',
            "consumers.mailer.transfer",
            "not one of adequacy_decision",
        ),
        (
            'region = "us-east"\ntransfer = "eu_us_data_privacy_framework"',
            'region = "in-west"\ntransfer = "adequacy_decision"',
            "consumers.mailer.transfer",
            "no adequacy decision for 'in'",
        ),
        ('purposes = ["analytics_cookies"]', 'purposes = ["profiling"]', "consumers.warehouse.purposes[0]", "forbidden purpose"),
        (
            'data_category = "user.payment"',
            'data_category = "user.financial.credit_card"',
            "categories.billing.data_category",
            "forbidden",
        ),
        (
            '[purposes.profiling]\ndescription = "Building profiles of visitors or contacts"\ndata_use = "personalize.profiling"\nforbidden = "profiling"',
            '[purposes.profiling]\ndata_use = "personalize.profiling"\nlegal_bases = ["legitimate_interest"]\ncategories = ["contact"]',
            "purposes.profiling.data_use",
            "profiling",
        ),
        ("[categories.third_party]", "[categories.third_parties]", "categories.third_party", "missing"),
        ("[free_text]\n", "[free_text]\nlanguage = 'en'\n", "free_text.language", "unknown key"),
        ("[free_text]\n", "[free_texts]\n", "free_text.fields", "missing"),
        ('"message", "note",', '"message", "  ",', "free_text.fields[1]", "not a usable field name"),
        ('"message", "note",', '"message", "Message",', "free_text.fields[1]", "normalises to 'message', listed already at [0]"),
        ('"user.biometric" = [', '"user.biometrics" = [', 'free_text.lexicon."user.biometrics"', "not a data category"),
        ('"user.biometric" = [', '"user.contact" = [', 'free_text.lexicon."user.contact"', "not a forbidden data category"),
        ('"user.biometric" = [', '"user.biometric" = 7\nx = [', 'free_text.lexicon."user.biometric"', "expected list"),
        ('"my iris scan",', '"* scan",', 'free_text.lexicon."user.biometric"[2]', "never first"),
        ('"my iris scan",', '"my ir*",', 'free_text.lexicon."user.biometric"[2]', "a stem is 4"),
        ('"my iris scan",', '"my i*ris",', 'free_text.lexicon."user.biometric"[2]', "never inside a word"),
        ('"my iris scan",', '"my iris (scan)",', 'free_text.lexicon."user.biometric"[2]', "letters and digits"),
        ('"my iris scan",', "42,", 'free_text.lexicon."user.biometric"[2]', "expected a term, got 42"),
        (
            '"my iris scan",',
            '"My  Fingerprint*",',
            'free_text.lexicon."user.biometric"[2]',
            'listed already, at free_text.lexicon."user.biometric"[0]',
        ),
    ],
)
def test_invalid_policy_fails_naming_the_key(tmp_path: Path, old: str, new: str, key: str, why: str) -> None:
    text = packaged_text()
    assert old in text, old
    with pytest.raises(PolicyError) as err:
        load_policy(write(tmp_path, text.replace(old, new, 1)))
    message = str(err.value)
    assert message.startswith(f"{key}: "), message
    assert why in message


def test_a_lexicon_category_needs_terms(tmp_path: Path) -> None:
    text = packaged_text()
    start = text.index('"user.biometric" = [')
    end = text.index("]", start) + 1
    with pytest.raises(PolicyError, match=r'^free_text\.lexicon\."user\.biometric": at least one term is needed$'):
        parse_policy(text[:start] + '"user.biometric" = []' + text[end:])


def test_missing_table_and_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"^consumers: missing$"):
        parse_policy(packaged_text().split("[consumers.crm-mirror]")[0])
    before, _, after = packaged_text().partition("[free_text]")
    with pytest.raises(PolicyError, match=r"^free_text: missing$"):
        parse_policy(before + after[after.index("[consumers.") :])
    with pytest.raises(PolicyError, match=r"^policy\.toml: not valid TOML"):
        load_policy(write(tmp_path, "[policy\nname = 1"))
    with pytest.raises(PolicyError, match=r"^absent\.toml: cannot read"):
        load_policy(tmp_path / "absent.toml")


def test_policy_is_frozen(policy: Policy) -> None:
    with pytest.raises(AttributeError):
        policy.no_relationship_months = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        policy.purposes["x"] = policy.purposes["newsletter"]  # type: ignore[index]


def test_the_version_is_the_hash_of_the_file_and_a_purposes_meaning_its_substance(tmp_path: Path, policy: Policy) -> None:
    import hashlib

    assert policy.version == hashlib.sha256(packaged_text().encode()).hexdigest()[:16]
    commented = parse_policy(packaged_text() + "\n# a comment\n")
    assert commented.version != policy.version  # another file, another version
    assert commented.purposes["newsletter"].meaning == policy.purposes["newsletter"].meaning  # the same promise
    widened = parse_policy(packaged_text().replace("Newsletter subscription (", "Newsletter and partner offers (", 1))
    assert widened.purposes["newsletter"].meaning != policy.purposes["newsletter"].meaning
    assert widened.purposes["marketing_email"].meaning == policy.purposes["marketing_email"].meaning
