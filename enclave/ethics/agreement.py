"""The versioned data use agreement that members accept before their first data access.

Each version is a TOML file ``agreements/<version>.toml`` inside this package
with the text in English (``en``) and Chinese (``zh_CN``). A published
version is never edited, because an acceptance stores the SHA-256 of the
exact text the member was shown. A changed text goes into a new file with the
next version number, and members accept the new version before their next
data access.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from enclave.errors import ConfigurationError, NotFound

__all__ = ["Agreement", "current_agreement", "load_agreement", "list_versions"]

DEFAULT_LANGUAGE = "en"


@dataclass(frozen=True)
class Agreement:
    """One version of the data use agreement in every language it is written in."""

    version: str
    effective: dt.date
    texts: dict[str, str]
    """Agreement text by language code (``en``, ``zh_CN``)."""

    def text(self, language: str) -> str:
        """Return the text in ``language``, or in English if there is no such text."""
        return self.texts.get(self.language_for(language), self.texts[DEFAULT_LANGUAGE])

    def language_for(self, language: str) -> str:
        """Return the language code of the text shown to a reader of ``language``."""
        if language in self.texts:
            return language
        base = language.split("_")[0]
        for code in self.texts:
            if code.split("_")[0] == base:
                return code
        return DEFAULT_LANGUAGE

    def sha256(self, language: str) -> str:
        """Return the hex SHA-256 of the UTF-8 text shown in ``language``."""
        return hashlib.sha256(self.text(language).encode("utf-8")).hexdigest()


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@cache
def list_versions() -> tuple[str, ...]:
    """Return the versions shipped with the package, oldest first."""
    folder = resources.files(__package__).joinpath("agreements")
    versions = [
        entry.name.removesuffix(".toml")
        for entry in folder.iterdir()
        if entry.name.endswith(".toml")
    ]
    if not versions:
        raise ConfigurationError(
            "no data use agreement found in enclave/ethics/agreements; reinstall "
            "the enclave package"
        )
    return tuple(sorted(versions, key=_version_key))


@cache
def load_agreement(version: str) -> Agreement:
    """Load one version of the agreement.

    Raises
    ------
    NotFound
        If no such version ships with the package.
    ConfigurationError
        If the file lacks the English text or its version field disagrees
        with its file name.
    """
    if version not in list_versions():
        raise NotFound(
            f"data use agreement version {version!r} not found; known versions: "
            f"{', '.join(list_versions())}"
        )
    source = resources.files(__package__).joinpath("agreements", f"{version}.toml")
    data = tomllib.loads(source.read_text(encoding="utf-8"))

    if str(data.get("version")) != version:
        raise ConfigurationError(
            f"agreement file {version}.toml declares version {data.get('version')!r}; "
            "the file name and the version field must match"
        )
    texts = {code: text.strip() + "\n" for code, text in data.get("text", {}).items()}
    if DEFAULT_LANGUAGE not in texts:
        raise ConfigurationError(
            f"agreement version {version} has no English text; add [text] en"
        )
    return Agreement(version=version, effective=data["effective"], texts=texts)


def current_agreement() -> Agreement:
    """Return the newest version of the agreement, the one members must accept."""
    return load_agreement(list_versions()[-1])
