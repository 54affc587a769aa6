"""Parse and check the application and amendment forms.

Parsing turns the strings of a web form or the command line into an
:class:`Application` or :class:`AmendmentRequest`, and collects every problem
as a :class:`FieldError` instead of stopping at the first one, so the page
can show all of them at once. Messages are English templates with
``%(name)s`` placeholders; the page translates the template before filling
it in.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from enclave.errors import ValidationError

__all__ = [
    "DEID_PROFILES",
    "USE_SCENES",
    "AmendmentRequest",
    "Application",
    "FieldError",
    "FormInvalid",
    "parse_amendment",
    "parse_application",
]

USE_SCENES: dict[str, str] = {
    "imaging-diagnosis": "Imaging diagnosis",
    "surgery-monitoring": "Surgery monitoring",
    "inpatient-monitoring": "Inpatient monitoring",
    "teaching": "Teaching",
    "research": "Research",
    "ai-assisted-diagnosis": "AI-assisted diagnosis",
    "new-technology-research": "New-technology research",
}
"""Use scenes a project may state as its purpose, with their English labels."""

DEID_PROFILES: dict[str, str] = {
    "baseline": "Baseline: faces and identity text removed",
    "education": "Education: also iris, ears and voice removed",
    "clinical-research": "Clinical research: only research-relevant content kept",
    "new-tech-research": "New-technology research: disease features kept",
    "ai-diagnosis": "AI-assisted diagnosis",
}
"""De-identification profiles a project may request, with their English labels."""

FIELD_LABELS: dict[str, str] = {
    "name": "Project name",
    "title": "Title",
    "principal_investigator": "Principal investigator",
    "use_scene": "Use scene",
    "summary": "Summary",
    "deid_profile": "De-identification profile",
    "datasets": "Datasets",
    "members": "Members",
    "starts_on": "Start date",
    "ends_on": "End date",
    "ethics_ref": "Ethics approval reference",
    "consent_basis": "Consent basis",
    "reason": "Reason",
    "add_members": "New members",
    "add_datasets": "New datasets",
    "new_ends_on": "New end date",
}

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{2,63}$")
USERNAME_RE = re.compile(r"^[A-Za-z0-9._@+-]{1,128}$")
MAX_TEXT = {"title": 255, "ethics_ref": 255, "consent_basis": 255, "summary": 10000}
MAX_PROJECT_YEARS = 10


@dataclass(frozen=True)
class FieldError:
    """One problem with one form field, as a translatable message template."""

    field: str
    message: str
    """English template; ``%(label)s`` is the field's label, others come from params."""
    params: Mapping[str, Any] = field(default_factory=dict)

    def render(self, translate: Any = None) -> str:
        """Return the message, translated by ``translate`` when one is given."""
        translate = translate or (lambda text: text)
        values = {"label": translate(FIELD_LABELS.get(self.field, self.field))}
        values.update(self.params)
        return translate(self.message) % values


class FormInvalid(ValidationError):
    """A form has one or more invalid fields; nothing was stored."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(error.render() for error in self.errors))


@dataclass(frozen=True)
class Application:
    """A research project as the applicant describes it to the ethics committee."""

    name: str
    title: str
    principal_investigator: str
    use_scene: str
    summary: str
    deid_profile: str
    datasets: tuple[str, ...]
    members: tuple[str, ...]
    starts_on: dt.date
    ends_on: dt.date
    ethics_ref: str
    consent_basis: str


@dataclass(frozen=True)
class AmendmentRequest:
    """A change of an approved project's scope: new members, datasets or end date."""

    add_members: tuple[str, ...] = ()
    add_datasets: tuple[str, ...] = ()
    new_ends_on: dt.date | None = None
    reason: str = ""


def _single(arguments: Mapping[str, Any], name: str) -> str:
    value = arguments.get(name, "")
    if isinstance(value, list | tuple):
        value = value[0] if value else ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip()


def _multiple(arguments: Mapping[str, Any], name: str) -> list[str]:
    value = arguments.get(name, [])
    values = value if isinstance(value, list | tuple) else [value]
    items: list[str] = []
    for entry in values:
        if isinstance(entry, bytes):
            entry = entry.decode("utf-8", "replace")
        # One text field may list several names, split by commas or lines.
        items.extend(part.strip() for part in re.split(r"[,\s]+", str(entry)))
    return list(dict.fromkeys(item for item in items if item))


def _parse_date(
    raw: str, name: str, errors: list[FieldError], *, required: bool = True
) -> dt.date | None:
    if not raw:
        if required:
            errors.append(
                FieldError(name, "%(label)s is missing; enter a date as YYYY-MM-DD.")
            )
        return None
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        errors.append(
            FieldError(
                name,
                "%(label)s %(value)r is not a valid date; enter it as YYYY-MM-DD, "
                "for example 2027-03-31.",
                {"value": raw},
            )
        )
        return None


def _check_usernames(names: Iterable[str], name: str, errors: list[FieldError]) -> None:
    for username in names:
        if not USERNAME_RE.match(username):
            errors.append(
                FieldError(
                    name,
                    "Member %(value)r is not a valid hub user name; use letters, "
                    "digits and . _ @ + -, and separate names by commas.",
                    {"value": username},
                )
            )


def _check_datasets(
    names: Iterable[str], name: str, known: Iterable[str], errors: list[FieldError]
) -> None:
    known = set(known)
    for dataset in names:
        if dataset not in known:
            errors.append(
                FieldError(
                    name,
                    "Dataset %(value)r does not exist; choose from the published "
                    "datasets: %(choices)s.",
                    {"value": dataset, "choices": ", ".join(sorted(known)) or "-"},
                )
            )


def _check_choice(
    value: str, name: str, choices: Iterable[str], errors: list[FieldError]
) -> None:
    choices = list(choices)
    if not value:
        errors.append(
            FieldError(
                name,
                "%(label)s is missing; choose one of: %(choices)s.",
                {"choices": ", ".join(choices)},
            )
        )
    elif value not in choices:
        errors.append(
            FieldError(
                name,
                "%(label)s %(value)r is not known; choose one of: %(choices)s.",
                {"value": value, "choices": ", ".join(choices)},
            )
        )


def parse_application(
    arguments: Mapping[str, Any],
    *,
    known_datasets: Iterable[str],
    today: dt.date | None = None,
) -> Application:
    """Build an :class:`Application` from form fields, checking every field.

    Parameters
    ----------
    arguments
        Field name to value, or to a list of values as tornado delivers them.
        ``datasets`` and ``members`` may repeat or list names separated by
        commas or white space.
    known_datasets
        Names of the published datasets an application may request.
    today
        The date that the end date must not precede; default today (UTC).

    Raises
    ------
    FormInvalid
        With one :class:`FieldError` per problem.
    """
    today = today or dt.datetime.now(dt.UTC).date()
    errors: list[FieldError] = []
    text = {name: _single(arguments, name) for name in FIELD_LABELS}

    for name in (
        "name",
        "title",
        "principal_investigator",
        "ethics_ref",
        "consent_basis",
    ):
        if not text[name]:
            errors.append(FieldError(name, "%(label)s is missing; fill it in."))
    for name, limit in MAX_TEXT.items():
        if len(text[name]) > limit:
            errors.append(
                FieldError(
                    name,
                    "%(label)s is %(length)d characters long; shorten it to at most "
                    "%(limit)d.",
                    {"length": len(text[name]), "limit": limit},
                )
            )
    if text["name"] and not NAME_RE.match(text["name"]):
        errors.append(
            FieldError(
                "name",
                "Project name %(value)r is invalid; use 3 to 64 lower-case letters, "
                "digits and '-', starting with a letter.",
                {"value": text["name"]},
            )
        )
    if text["principal_investigator"]:
        _check_usernames(
            [text["principal_investigator"]], "principal_investigator", errors
        )
    _check_choice(text["use_scene"], "use_scene", USE_SCENES, errors)
    _check_choice(text["deid_profile"], "deid_profile", DEID_PROFILES, errors)

    datasets = _multiple(arguments, "datasets")
    if not datasets:
        errors.append(FieldError("datasets", "Choose at least one dataset."))
    _check_datasets(datasets, "datasets", known_datasets, errors)
    members = _multiple(arguments, "members")
    _check_usernames(members, "members", errors)

    starts_on = _parse_date(text["starts_on"], "starts_on", errors)
    ends_on = _parse_date(text["ends_on"], "ends_on", errors)
    _check_period(starts_on, ends_on, today, errors)

    if errors:
        raise FormInvalid(errors)
    assert starts_on is not None and ends_on is not None
    return Application(
        name=text["name"],
        title=text["title"],
        principal_investigator=text["principal_investigator"],
        use_scene=text["use_scene"],
        summary=text["summary"],
        deid_profile=text["deid_profile"],
        datasets=tuple(datasets),
        members=tuple(members),
        starts_on=starts_on,
        ends_on=ends_on,
        ethics_ref=text["ethics_ref"],
        consent_basis=text["consent_basis"],
    )


def _check_period(
    starts_on: dt.date | None,
    ends_on: dt.date | None,
    today: dt.date,
    errors: list[FieldError],
) -> None:
    if starts_on is None or ends_on is None:
        return
    if ends_on <= starts_on:
        errors.append(
            FieldError(
                "ends_on",
                "End date %(value)s is not after the start date %(start)s; choose an "
                "end date after the start date.",
                {"value": ends_on.isoformat(), "start": starts_on.isoformat()},
            )
        )
    elif ends_on < today:
        errors.append(
            FieldError(
                "ends_on",
                "End date %(value)s is in the past; choose today (%(today)s) or later.",
                {"value": ends_on.isoformat(), "today": today.isoformat()},
            )
        )
    elif (ends_on - starts_on).days > MAX_PROJECT_YEARS * 366:
        errors.append(
            FieldError(
                "ends_on",
                "End date %(value)s is more than %(years)d years after the start "
                "date; choose an earlier end date and extend it later by an amendment.",
                {"value": ends_on.isoformat(), "years": MAX_PROJECT_YEARS},
            )
        )


def parse_amendment(
    arguments: Mapping[str, Any],
    *,
    known_datasets: Iterable[str],
    current_ends_on: dt.date,
) -> AmendmentRequest:
    """Build an :class:`AmendmentRequest` from form fields, checking every field.

    Raises
    ------
    FormInvalid
        If nothing would change, a name is invalid, a dataset is unknown or
        the new end date is not later than the current one.
    """
    errors: list[FieldError] = []
    members = _multiple(arguments, "add_members")
    datasets = _multiple(arguments, "add_datasets")
    reason = _single(arguments, "reason")
    new_ends_on = _parse_date(
        _single(arguments, "new_ends_on"), "new_ends_on", errors, required=False
    )

    _check_usernames(members, "add_members", errors)
    _check_datasets(datasets, "add_datasets", known_datasets, errors)
    if new_ends_on is not None and new_ends_on <= current_ends_on:
        errors.append(
            FieldError(
                "new_ends_on",
                "New end date %(value)s is not later than the current end date "
                "%(current)s; an amendment can only extend a project.",
                {
                    "value": new_ends_on.isoformat(),
                    "current": current_ends_on.isoformat(),
                },
            )
        )
    if not reason:
        errors.append(
            FieldError("reason", "%(label)s is missing; say why the change is needed.")
        )
    if not members and not datasets and new_ends_on is None and not errors:
        errors.append(
            FieldError(
                "add_members",
                "The amendment changes nothing; add a member, a dataset or a later "
                "end date.",
            )
        )

    if errors:
        raise FormInvalid(errors)
    return AmendmentRequest(
        add_members=tuple(members),
        add_datasets=tuple(datasets),
        new_ends_on=new_ends_on,
        reason=reason,
    )
