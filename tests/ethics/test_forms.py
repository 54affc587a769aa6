"""Parsing of the application and amendment forms, and their Chinese translations."""

from __future__ import annotations

import ast
import csv
import datetime as dt
import re
from pathlib import Path

import pytest

from enclave.errors import NotFound
from enclave.ethics import forms, labels
from enclave.ethics.agreement import current_agreement, list_versions, load_agreement
from enclave.ethics.forms import FormInvalid, parse_amendment, parse_application

ETHICS_DIR = Path(forms.__file__).parent
TODAY = dt.date(2026, 12, 4)


def _fields(**changes: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "name": "gait-study",
        "title": "Gait",
        "principal_investigator": "pi-wang",
        "use_scene": "teaching",
        "deid_profile": "education",
        "datasets": ["ward-clips"],
        "members": ["alice, bob\ncarol"],
        "starts_on": "2026-12-04",
        "ends_on": "2027-01-31",
        "ethics_ref": "EC-1",
        "consent_basis": "consent",
    }
    fields.update(changes)
    return fields


def _errors(**changes: object) -> dict[str, str]:
    with pytest.raises(FormInvalid) as info:
        parse_application(
            _fields(**changes), known_datasets=["ward-clips"], today=TODAY
        )
    return {error.field: error.render() for error in info.value.errors}


def test_valid_form_parses() -> None:
    application = parse_application(
        _fields(), known_datasets=["ward-clips"], today=TODAY
    )

    assert application.members == ("alice", "bob", "carol")
    assert application.ends_on == dt.date(2027, 1, 31)
    assert application.use_scene == "teaching"


def test_every_problem_reported_at_once() -> None:
    errors = _errors(title="", ends_on="2026-13-01", datasets=[], members=["a b", "x!"])

    assert set(errors) == {"title", "ends_on", "datasets", "members"}
    assert errors["title"] == "Title is missing; fill it in."
    assert "'2026-13-01' is not a valid date" in errors["ends_on"]
    assert "'x!' is not a valid hub user name" in errors["members"]


def test_end_before_start_names_both_dates() -> None:
    errors = _errors(ends_on="2026-12-01")

    assert errors["ends_on"] == (
        "End date 2026-12-01 is not after the start date 2026-12-04; choose an end "
        "date after the start date."
    )


def test_unknown_dataset_lists_the_choices() -> None:
    errors = _errors(datasets=["ward-clips", "vip-clips"])

    assert "Dataset 'vip-clips' does not exist" in errors["datasets"]
    assert "ward-clips" in errors["datasets"]


def test_amendment_must_change_something() -> None:
    with pytest.raises(FormInvalid, match="changes nothing"):
        parse_amendment(
            {"reason": "why not"},
            known_datasets=["ward-clips"],
            current_ends_on=dt.date(2027, 1, 31),
        )


def test_amendment_cannot_shorten() -> None:
    with pytest.raises(FormInvalid, match="can only extend"):
        parse_amendment(
            {"new_ends_on": "2027-01-01", "reason": "shorter"},
            known_datasets=[],
            current_ends_on=dt.date(2027, 1, 31),
        )


def test_profiles_match_deidentification() -> None:
    from enclave.deid.profiles import PROFILE_NAMES

    assert tuple(forms.DEID_PROFILES) == PROFILE_NAMES


def test_agreement_versions() -> None:
    agreement = current_agreement()

    assert list_versions()[-1] == agreement.version
    assert agreement.text("zh_CN") != agreement.text("en")
    assert agreement.text("fr") == agreement.text("en")
    assert len(agreement.sha256("en")) == 64
    with pytest.raises(NotFound, match="known versions"):
        load_agreement("999")


def _translatable() -> set[str]:
    found: set[str] = set()
    for template in (ETHICS_DIR / "templates").glob("*.html"):
        text = template.read_text(encoding="utf-8")
        found.update(re.findall(r'_\("((?:[^"\\]|\\.)*)"\)', text))
        found.update(re.findall(r"_\('((?:[^'\\]|\\.)*)'\)", text))
    for module in ("forms.py", "applications.py", "amendments.py"):
        tree = ast.parse((ETHICS_DIR / module).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "FieldError"
                and isinstance(node.args[1], ast.Constant)
            ):
                found.add(node.args[1].value)
    for table in (
        forms.FIELD_LABELS,
        forms.USE_SCENES,
        forms.DEID_PROFILES,
        labels.STATUS_LABELS,
        labels.DECISION_LABELS,
        labels.AMENDMENT_STATUS_LABELS,
        labels.CAUSE_MESSAGES,
    ):
        found.update(table.values())
    return found


def test_every_page_text_has_chinese() -> None:
    path = ETHICS_DIR / "translations" / "zh_CN.csv"
    with path.open(encoding="utf-8") as handle:
        translated = {row[0]: row[1] for row in csv.reader(handle)}

    missing = sorted(_translatable() - set(translated))

    assert missing == []
    for english, chinese in translated.items():
        placeholders = sorted(re.findall(r"%\(\w+\)[sdr]", english))
        assert sorted(re.findall(r"%\(\w+\)[sdr]", chinese)) == placeholders, english
