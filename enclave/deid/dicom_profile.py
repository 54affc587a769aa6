"""The attribute table of the DICOM Basic Application Level Confidentiality Profile.

The table itself is data in ``dicom_basic_profile.toml`` next to this module:
one action code per attribute keyword, taken from DICOM PS3.15 Annex E. This
module loads it, maps keywords to tags, resolves the compound codes and contains
the rules for attributes that the table cannot list one by one.
"""

from __future__ import annotations

import functools
import importlib.resources
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from pydicom.datadict import tag_for_keyword
from pydicom.tag import BaseTag, Tag

from enclave.errors import ConfigurationError

__all__ = [
    "Action",
    "BasicProfileTable",
    "SafePrivate",
    "load_basic_profile",
]

TABLE_FILE = "dicom_basic_profile.toml"


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
# Without an IOD check, the code that keeps every IOD valid is used.
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
class BasicProfileTable:
    """The resolved attribute table.

    Attributes
    ----------
    actions
        Action of each listed attribute, by tag.
    codes
        The code as the standard writes it (``"X/Z/D"``), by tag, for reports.
    safe_private
        Private attributes that are kept; every other private one is removed.
    """

    actions: dict[BaseTag, Action]
    codes: dict[BaseTag, str]
    safe_private: frozenset[SafePrivate]

    def action_for(self, tag: int) -> Action | None:
        """Return the action for ``tag``, or None when the table does not list it."""
        tag = Tag(tag)
        if tag.group & 0xFF00 == 0x5000:
            # Curve data (retired) can hold any annotation, including names.
            return Action.REMOVE
        if tag.group & 0xFF00 == 0x6000 and tag.group % 2 == 0:
            # Overlay data is a bitmap that may carry burned-in text, and
            # overlay comments are free text; the profile removes both.
            if tag.element in (0x3000, 0x4000):
                return Action.REMOVE
        return self.actions.get(tag)

    def is_safe_private(self, creator: str | None, tag: BaseTag) -> bool:
        """Return whether the private attribute ``tag`` of ``creator`` is kept."""
        if creator is None:
            return False
        entry = SafePrivate(creator.strip(), tag.group, tag.element & 0xFF)
        return entry in self.safe_private

    def with_safe_private(self, extra: Iterable[SafePrivate]) -> BasicProfileTable:
        """Return a copy that also keeps the private attributes in ``extra``."""
        return BasicProfileTable(
            self.actions, self.codes, self.safe_private | frozenset(extra)
        )


@functools.cache
def load_basic_profile() -> BasicProfileTable:
    """Load the attribute table shipped with the package.

    Raises
    ------
    ConfigurationError
        If the table names an unknown keyword or action code.
    """
    text = importlib.resources.files("enclave.deid").joinpath(TABLE_FILE).read_text()
    data = tomllib.loads(text)

    actions: dict[BaseTag, Action] = {}
    codes: dict[BaseTag, str] = {}
    for keyword, code in data["actions"].items():
        tag_value = tag_for_keyword(keyword)
        if tag_value is None:
            raise ConfigurationError(
                f"{TABLE_FILE} lists {keyword!r}, which is not a DICOM keyword "
                "known to pydicom; fix the spelling or remove the row"
            )
        tag = Tag(tag_value)
        actions[tag] = _resolve(keyword, code)
        codes[tag] = code

    safe = frozenset(
        SafePrivate(item["creator"].strip(), int(item["group"]), int(item["element"]))
        for item in data.get("private", {}).get("safe", [])
    )
    return BasicProfileTable(actions, codes, safe)


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
