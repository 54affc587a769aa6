"""De-identification profiles: named lists of steps with their settings.

The profiles are data in ``profiles.toml`` next to this module. Run-time
options override a profile's settings; an option is named ``<step>_<setting>``
(``faces_threshold=0.4``, ``audio_mode="mcadams"``, ``encode_crf=20``), and
``keep_ranges`` and ``keep_regions`` select what the ``clinical-research``
profile keeps.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import tomllib
from dataclasses import dataclass
from typing import Any

from enclave.errors import ValidationError

__all__ = ["PROFILE_NAMES", "Profile", "load_profile"]

PROFILE_NAMES = (
    "baseline",
    "education",
    "clinical-research",
    "new-tech-research",
    "ai-diagnosis",
)


@functools.cache
def _profile_data() -> dict[str, Any]:
    text = (
        importlib.resources.files("enclave.deid").joinpath("profiles.toml").read_text()
    )
    return tomllib.loads(text)


@dataclass(frozen=True)
class Profile:
    """A profile resolved with its options: the steps and each step's settings."""

    name: str
    description: str
    steps: tuple[str, ...]
    settings: dict[str, dict[str, Any]]

    def step(self, name: str) -> dict[str, Any]:
        """Return the settings of step ``name`` (empty when the profile skips it)."""
        return self.settings.get(name, {}) if name in self.steps else {}

    def runs(self, name: str) -> bool:
        """Return whether the profile runs step ``name``."""
        return name in self.steps and self.settings.get(name, {}).get("enabled", True)

    def as_report(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "steps": [
                {"name": s, "settings": self.settings.get(s, {})} for s in self.steps
            ],
        }


def load_profile(name: str, **options: Any) -> Profile:
    """Load profile ``name`` and apply run-time ``options``.

    Raises
    ------
    ValidationError
        If the profile or an option is unknown or an option's value has the
        wrong type.
    """
    data = _profile_data()
    if name not in data["profiles"]:
        raise ValidationError(
            f"de-identification profile {name!r} is unknown; use one of "
            + ", ".join(PROFILE_NAMES)
        )
    profile = data["profiles"][name]
    steps = tuple(profile["steps"])
    settings = {step: copy.deepcopy(data["steps"][step]) for step in steps}
    for step in steps:
        settings[step].update(copy.deepcopy(profile.get(step, {})))

    for key, value in options.items():
        step, setting = _split_option(key, data["steps"])
        if step not in steps:
            raise ValidationError(
                f"option {key!r} is invalid for profile {name!r}, which has no "
                f"{step!r} step; its steps are {', '.join(steps)}"
            )
        settings[step][setting] = _checked(key, data["steps"][step][setting], value)

    _validate_keep(settings.get("keep", {}))
    return Profile(name, profile.get("description", ""), steps, settings)


def _split_option(key: str, defaults: dict[str, dict[str, Any]]) -> tuple[str, str]:
    step, _, setting = key.partition("_")
    if step in defaults and setting in defaults[step]:
        return step, setting
    known = sorted(f"{s}_{k}" for s, values in defaults.items() for k in values)
    raise ValidationError(
        f"option {key!r} is unknown; known options: {', '.join(known)}"
    )


def _checked(key: str, default: Any, value: Any) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValidationError(
                f"option {key}={value!r} is invalid; use true or false"
            )
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError(f"option {key}={value!r} is invalid; use a number")
        return type(default)(value) if isinstance(default, float) else value
    if isinstance(default, list):
        if not isinstance(value, (list, tuple)):
            raise ValidationError(f"option {key}={value!r} is invalid; use a list")
        return [
            list(item) if isinstance(item, (list, tuple)) else item for item in value
        ]
    if not isinstance(value, str):
        raise ValidationError(f"option {key}={value!r} is invalid; use a string")
    return value


def _validate_keep(keep: dict[str, Any]) -> None:
    for item in keep.get("ranges", []):
        if len(item) != 2 or not all(isinstance(v, (int, float)) for v in item):
            raise ValidationError(
                f"keep range {item!r} is invalid; use (start_s, end_s) in seconds"
            )
        if not 0 <= item[0] < item[1]:
            raise ValidationError(
                f"keep range {item!r} is invalid; start must be >= 0 and before end"
            )
    for item in keep.get("regions", []):
        if len(item) != 4 or not all(isinstance(v, int) for v in item):
            raise ValidationError(
                f"keep region {item!r} is invalid; use (x, y, width, height) in pixels"
            )
        if item[0] < 0 or item[1] < 0 or item[2] <= 0 or item[3] <= 0:
            raise ValidationError(
                f"keep region {item!r} is invalid; x and y must be >= 0 and the "
                "width and height positive"
            )
