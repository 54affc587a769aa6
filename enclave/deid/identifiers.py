"""Identifier policies: the link a derivative keeps to its source, per profile.

``none`` keeps the catalog link to the source asset. ``random`` (no link
back) drops the link and replaces identifiers by random ones whose mapping is
never stored. ``pseudonym`` drops the link and replaces identifiers by keyed
pseudonyms whose mapping is stored encrypted (see
:mod:`enclave.deid.pseudonyms`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from enclave.deid.profiles import Profile

__all__ = ["IdentifierPolicy"]


@dataclass
class IdentifierPolicy:
    mode: str
    store: Any = None
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def for_profile(cls, profile: Profile, vault: Any) -> IdentifierPolicy:
        mode = profile.step("identifiers").get("mode", "none")
        if mode == "pseudonym":
            from enclave.deid.pseudonyms import PseudonymStore

            return cls(
                mode, PseudonymStore(vault.root.parent / "pseudonyms", vault.keyring)
            )
        return cls(mode)

    @property
    def pseudonym_key(self) -> bytes | None:
        """The key of keyed DICOM pseudonyms, or None when the profile keeps none."""
        return self.store.pseudonym_key if self.mode == "pseudonym" else None

    def source_link(self, source_id: str) -> str | None:
        """Return the ``source_id`` to store on the derivative, or None for no link."""
        return source_id if self.mode == "none" else None

    def describe(self, source_id: str, dataset_name: str) -> dict[str, Any]:
        """Return the identifier section of the derivative's report."""
        if self.mode == "random":
            return {"mode": "random", "subject": secrets.token_hex(16)}
        if self.mode == "pseudonym":
            subject = self.store.pseudonym(source_id, namespace="asset")
            self.pending[subject] = {"asset_id": source_id, "dataset": dataset_name}
            return {"mode": "pseudonym", "subject": subject}
        return {"mode": "none", "source_id": source_id}

    def scrub_report(self, report: dict[str, Any]) -> dict[str, Any]:
        """Drop the report fields that link a derivative to its source file.

        Only profiles without a link back drop them.
        """
        if self.mode != "none":
            report.pop("input_sha256", None)
        return report

    def finish(self, uid_map: dict[str, str]) -> None:
        """Store the pseudonym mapping, or discard the random one."""
        if self.mode == "pseudonym":
            for subject, entry in self.pending.items():
                self.store.record(subject, entry)
            for original, replacement in uid_map.items():
                pseudonym = self.store.pseudonym(replacement, namespace="dicom-uid")
                self.store.record(
                    pseudonym, {"dicom_uid": original, "replacement": replacement}
                )
        else:
            uid_map.clear()
