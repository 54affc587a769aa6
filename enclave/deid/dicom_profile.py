"""The attribute table of the DICOM Basic Application Level Confidentiality Profile.

The table itself is data in ``dicom_basic_profile.toml`` next to this module:
one action code per tag, taken from DICOM PS3.15 Annex E (the edition is named
in the file). This module loads it, checks each keyword against pydicom's data
dictionary, resolves the compound codes and matches the rows for repeating
groups (curve and overlay attributes) by mask.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from pydicom.datadict import keyword_for_tag
from pydicom.tag import BaseTag, Tag

from enclave.errors import ConfigurationError

__all__ = [
    "Action",
    "BasicProfileTable",
    "SafePrivate",
    "load_basic_profile",
]

TABLE_FILE = "dicom_basic_profile.toml"

# "(0008,0050)", or "(60xx,3000)" where each x is any hex digit.
_TAG_TEXT = re.compile(r"^\(([0-9A-Fa-fx]{4}),([0-9A-Fa-fx]{4})\)$")


class Action(StrEnum):
    """Action code of the profile for one attribute."""

    DUMMY = "D"
    ZERO = "Z"
    REMOVE = "X"
    KEEP = "K"
    CLEAN = "C"
    UID = "U"


# The standard chooses within a compound code by the attribute's type in the
# IOD (Type 3 may be removed, Type 2 must be present, Type 1 needs a value).
# This module does not check the IOD, so it uses the code that keeps every
# IOD valid. That is D where the attribute may be Type 1 and Z where it is at
# most Type 2. Reference sequences get U, because their UIDs must still match
# the referenced instances.
_COMPOUND = {
    "Z/D": Action.DUMMY,
    "X/D": Action.DUMMY,
    "X/Z/D": Action.DUMMY,
    "X/Z": Action.ZERO,
    "X/Z/U*": Action.UID,
}


@dataclass(frozen=True)
class SafePrivate:
    """A private attribute that is kept: its creator, group and element offset."""

    creator: str
    group: int
    element: int


@dataclass(frozen=True)
class TagPattern:
    """A table row for a repeating group, such as overlay data (60xx,3000)."""

    mask: int
    value: int
    action: Action
    code: str

    def matches(self, tag: int) -> bool:
        """Return whether ``tag`` is one of the attributes of this row."""
        return tag & self.mask == self.value


@dataclass(frozen=True)
class BasicProfileTable:
    """The resolved attribute table.

    Attributes
    ----------
    actions
        Action of each listed attribute, by tag.
    codes
        The code as the standard writes it (``"X/Z/D"``), by tag, for reports.
    patterns
        Rows for repeating groups: curve data (50xx,xxxx) and overlay data
        and comments (60xx,3000) and (60xx,4000).
    safe_private
        Private attributes that are kept; every other private one is removed.
    edition
        Edition of DICOM PS3.15 that the table follows, such as ``"2026d"``.
    """

    actions: dict[BaseTag, Action]
    codes: dict[BaseTag, str]
    patterns: tuple[TagPattern, ...]
    safe_private: frozenset[SafePrivate]
    edition: str

    def action_for(self, tag: int) -> Action | None:
        """Return the action for ``tag``, or None when the table does not list it."""
        tag = Tag(tag)
        action = self.actions.get(tag)
        if action is not None:
            return action
        for pattern in self.patterns:
            if pattern.matches(tag):
                return pattern.action
        return None

    def is_safe_private(self, creator: str | None, tag: BaseTag) -> bool:
        """Return whether the private attribute ``tag`` of ``creator`` is kept."""
        if creator is None:
            return False
        entry = SafePrivate(creator.strip(), tag.group, tag.element & 0xFF)
        return entry in self.safe_private

    def with_safe_private(self, extra: Iterable[SafePrivate]) -> BasicProfileTable:
        """Return a copy that also keeps the private attributes in ``extra``."""
        return BasicProfileTable(
            self.actions,
            self.codes,
            self.patterns,
            self.safe_private | frozenset(extra),
            self.edition,
        )


@functools.cache
def load_basic_profile() -> BasicProfileTable:
    """Load the attribute table shipped with the package.

    The rows of ``[basic_profile]`` (the standard's table) and ``[additions]``
    (attributes this program removes beyond the standard) are merged.

    Raises
    ------
    ConfigurationError
        If a row has an invalid tag, a keyword that differs from pydicom's
        keyword for the tag, or an unknown action code.
    """
    text = importlib.resources.files("enclave.deid").joinpath(TABLE_FILE).read_text()
    data = tomllib.loads(text)

    actions: dict[BaseTag, Action] = {}
    codes: dict[BaseTag, str] = {}
    patterns: list[TagPattern] = []
    rows = {**data["basic_profile"], **data.get("additions", {})}
    for tag_text, row in rows.items():
        keyword, code = row["keyword"], row["action"]
        action = _resolve(keyword, code)
        mask, value = _parse_tag(tag_text)
        if mask != 0xFFFFFFFF:
            patterns.append(TagPattern(mask, value, action, code))
            continue
        _check_keyword(tag_text, value, keyword)
        tag = Tag(value)
        actions[tag] = action
        codes[tag] = code

    safe = frozenset(
        SafePrivate(item["creator"].strip(), int(item["group"]), int(item["element"]))
        for item in data.get("private", {}).get("safe", [])
    )
    return BasicProfileTable(actions, codes, tuple(patterns), safe, data["edition"])


def _parse_tag(text: str) -> tuple[int, int]:
    """Return the (mask, value) pair of a tag such as ``"(60xx,3000)"``."""
    match = _TAG_TEXT.match(text)
    if match is None:
        raise ConfigurationError(
            f"{TABLE_FILE} has the row {text!r}, which is not a tag; "
            "write tags as (gggg,eeee) in hex, with x for any digit"
        )
    digits = match.group(1) + match.group(2)
    mask = int("".join("0" if digit == "x" else "F" for digit in digits), 16)
    value = int(digits.replace("x", "0"), 16)
    return mask, value


def _check_keyword(tag_text: str, tag: int, keyword: str) -> None:
    # A keyword that differs from pydicom's shows a typo in the tag. Tags that
    # are newer than pydicom's data dictionary cannot be checked.
    known = keyword_for_tag(tag)
    if known and known != keyword:
        raise ConfigurationError(
            f"{TABLE_FILE} names {tag_text} {keyword!r}, but pydicom names that "
            f"tag {known!r}; fix the tag or the keyword"
        )


def _resolve(keyword: str, code: str) -> Action:
    if code in _COMPOUND:
        return _COMPOUND[code]
    try:
        return Action(code)
    except ValueError:
        raise ConfigurationError(
            f"{TABLE_FILE} gives {keyword!r} the action {code!r}, which is invalid; "
            "use D, Z, X, K, C, U or a compound code such as X/Z/D"
        ) from None
