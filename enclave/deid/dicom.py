"""De-identify DICOM files with the PS3.15 Basic Profile and Clean Pixel Data option.

:func:`deidentify_dicom` applies the attribute table of the Basic Application
Level Confidentiality Profile (see :mod:`enclave.deid.dicom_profile`) at every
depth of nested sequences. It removes private attributes that are not on the
safe list and replaces UIDs consistently across the files of a study. Burned-in
text is masked on every frame (see :mod:`enclave.deid.dicom_pixels`).

Profiles differ only in how identifiers (Patient ID, Patient's Name, Accession
Number, Study ID) and UIDs are replaced:

- ``baseline``, ``education``, ``clinical-research``: as the table says (Patient
  ID and name become empty), with random UIDs;
- ``new-tech-research``: random identifiers and UIDs; no mapping is kept
  beyond the ``uid_map`` the caller holds for one study;
- ``ai-diagnosis``: keyed pseudonyms (HMAC-SHA256 with ``pseudonym_key``), so
  the same patient and UID get the same replacement in every study.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import secrets
import warnings
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag
from pydicom.uid import generate_uid

from enclave.deid.dicom_pixels import clean_pixel_data, quarantine
from enclave.deid.dicom_profile import (
    Action,
    BasicProfileTable,
    SafePrivate,
    load_basic_profile,
)
from enclave.deid.result import DeidResult
from enclave.deid.text import TextDetector
from enclave.errors import DeidentificationError, ValidationError

__all__ = ["PROFILES", "deidentify_dicom"]

logger = logging.getLogger(__name__)

PROFILES = {
    "baseline": "table",
    "education": "table",
    "clinical-research": "table",
    "new-tech-research": "random",
    "ai-diagnosis": "pseudonym",
}

# Identifiers that the random and pseudonym modes replace instead of emptying.
_IDENTIFIERS = ("PatientID", "PatientName", "AccessionNumber", "StudyID")

# UIDs under this root are defined by the standard (SOP classes, transfer
# syntaxes, coding schemes) and identify no one.
_STANDARD_UID_ROOT = "1.2.840.10008."

_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UT", "UC", "PN"})

_DUMMY_BY_VR: dict[str, Any] = {
    "AE": "ANONYMOUS",
    "AS": "000D",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "LO": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "PN": "ANONYMIZED",
    "SH": "ANONYMIZED",
    "ST": "ANONYMIZED",
    "UC": "ANONYMIZED",
    "UT": "ANONYMIZED",
    "UR": "ANONYMIZED",
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "SV": 0,
    "UL": 0,
    "US": 0,
    "UV": 0,
}

# De-identification method codes of the DICOM coding scheme (DCM).
_CODE_BASIC = ("113100", "Basic Application Confidentiality Profile")
_CODE_CLEAN_PIXELS = ("113101", "Clean Pixel Data Option")
_CODE_SAFE_PRIVATE = ("113111", "Retain Safe Private Option")


def deidentify_dicom(
    data: bytes,
    profile: str,
    *,
    uid_map: dict[str, str] | None = None,
    pseudonym_key: bytes | None = None,
    safe_private: Iterable[SafePrivate] = (),
    detector: TextDetector | None = None,
) -> DeidResult:
    """De-identify one DICOM file held in memory.

    Parameters
    ----------
    data
        The DICOM file (Part 10, with or without the preamble).
    profile
        One of ``baseline``, ``education``, ``clinical-research``,
        ``new-tech-research`` or ``ai-diagnosis``.
    uid_map
        Original value -> replacement, shared by the calls for the files of
        one study so that UIDs and identifiers stay consistent; it is updated
        in place. It links replacements to originals, so keep it in memory for
        the study and never store it.
    pseudonym_key
        Secret key of the ``ai-diagnosis`` pseudonyms, at least 32 bytes.
    safe_private
        Private attributes to keep besides the safe list of the table file.
    detector
        Text detector for the pixel check; defaults to the shared one.

    Returns
    -------
    DeidResult
        The de-identified file (``media_type="dicom"``) and a report of the
        actions with their counts; the report contains no identifying value.

    Raises
    ------
    ValidationError
        If the profile is unknown, the key is missing or short, or ``data`` is
        not a DICOM file.
    DeidentificationError
        If the file is quarantined because its pixel data cannot be checked.
    ResidualCheckFailed
        If burned-in text remains after masking (also a quarantine).
    """
    mode = _profile_mode(profile, pseudonym_key)
    table = load_basic_profile().with_safe_private(safe_private)
    replacer = _Replacer(mode, {} if uid_map is None else uid_map, pseudonym_key)

    with warnings.catch_warnings():
        # Source files often hold values that break their VR's rules; pydicom
        # warns on reading them, and the warning would quote the value.
        warnings.filterwarnings("ignore", message="Invalid value", module="pydicom")
        # Implicit VR files give no VR for tags newer than pydicom's data
        # dictionary. pydicom reads them as UN, and the table applies by tag.
        warnings.filterwarnings("ignore", message="VR lookup failed", module="pydicom")
        ds = _read(data)
        pixels = clean_pixel_data(ds, detector=detector)
        cleaner = _AttributeCleaner(table, replacer, _patient_key(ds))
        cleaner.clean(ds)
        cleaner.clean_file_meta(ds.file_meta)
        _mark_deidentified(ds, profile, pixels, cleaner.private_kept)

        output = _write(ds)
        _check_readback(output, pixels)
    report = {
        "format": "dicom",
        "profile": profile,
        "identifier_mode": mode,
        "confidentiality_profile": "DICOM PS3.15 Basic Application Level "
        "Confidentiality Profile",
        "options": ["Clean Pixel Data"] if pixels["pixel_data"] else [],
        "attributes": dict(sorted(cleaner.counts.items())),
        "private_removed": cleaner.private_removed,
        "private_kept": cleaner.private_kept,
        "uids_replaced": cleaner.uids_replaced,
        "pixels": pixels,
    }
    logger.debug(
        "de-identified a DICOM file with profile %s: %d private attributes removed",
        profile,
        cleaner.private_removed,
    )
    return DeidResult(output, report, "dicom", ".dcm")


def _profile_mode(profile: str, pseudonym_key: bytes | None) -> str:
    if profile not in PROFILES:
        raise ValidationError(
            f"de-identification profile {profile!r} is unknown; use one of "
            + ", ".join(PROFILES)
        )
    mode = PROFILES[profile]
    if mode == "pseudonym" and (pseudonym_key is None or len(pseudonym_key) < 32):
        raise ValidationError(
            f"profile {profile!r} needs pseudonym_key, a secret of at least 32 "
            "bytes, so that the same patient gets the same pseudonym"
        )
    return mode


def _read(data: bytes) -> Dataset:
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=False)
    except InvalidDicomError as exc:
        raise ValidationError(
            "input is not a DICOM file (no DICM preamble or file meta); pass a "
            "DICOM Part 10 file"
        ) from exc
    except Exception as exc:
        raise ValidationError(
            f"DICOM file could not be parsed ({type(exc).__name__}); check that "
            "the file is complete"
        ) from exc
    if "TransferSyntaxUID" not in ds.file_meta:
        raise quarantine(
            "its file meta information has no Transfer Syntax UID, so the "
            "encoding of its data cannot be known"
        )
    return ds


def _patient_key(ds: Dataset) -> str:
    # Patient's Name and Patient ID share one replacement per patient; the ID
    # is the better key because names are not unique.
    patient_id = str(ds.get("PatientID", "") or "").strip()
    if patient_id:
        return f"id:{patient_id}"
    return f"name:{str(ds.get('PatientName', '') or '').strip()}"


class _Replacer:
    """Replacement UIDs and identifiers for one profile mode."""

    def __init__(self, mode: str, uid_map: dict[str, str], key: bytes | None):
        self.mode = mode
        self.map = uid_map
        self._key = key

    def uid(self, original: str) -> str:
        original = original.strip().rstrip("\0")
        if not original or original.startswith(_STANDARD_UID_ROOT):
            return original
        replacement = self.map.get(original)
        if replacement is None:
            if self.mode == "pseudonym":
                digest = self._hmac("uid", original)
                replacement = f"2.25.{int.from_bytes(digest[:16], 'big')}"
            else:
                # A random UUID-derived UID under the 2.25 root.
                replacement = generate_uid(prefix=None)
            self.map[original] = replacement
        return replacement

    def identifier(self, keyword: str, original: str, patient_key: str) -> str:
        if keyword in ("PatientID", "PatientName"):
            scope, value, prefix = "patient", patient_key, "P"
        else:
            scope, value, prefix = keyword, original.strip(), keyword[0]
        if not value or value in ("id:", "name:"):
            return ""

        # Valid UIDs contain only digits and dots, so these keys differ from them.
        map_key = f"{scope}:{value}"
        replacement = self.map.get(map_key)
        if replacement is None:
            if self.mode == "pseudonym":
                token = self._hmac(scope, value).hex()[:15].upper()
            else:
                token = secrets.token_hex(8)[:15].upper()
            # 16 characters fit the SH attributes (Accession Number, Study ID).
            replacement = prefix + token
            self.map[map_key] = replacement
        return replacement

    def _hmac(self, scope: str, value: str) -> bytes:
        assert self._key is not None
        message = f"enclave-dicom:{scope}:{value}".encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()


class _AttributeCleaner:
    """Apply the table's actions to a dataset and all its sequence items."""

    def __init__(self, table: BasicProfileTable, replacer: _Replacer, patient: str):
        self.table = table
        self.replacer = replacer
        self.patient = patient
        self.counts: Counter[str] = Counter()
        self.private_removed = 0
        self.private_kept = 0
        self.uids_replaced = 0

    def clean(self, ds: Dataset, *, in_dummy_sequence: bool = False) -> None:
        for tag in list(ds.keys()):
            if tag.is_private:
                self._clean_private(ds, tag)
                continue
            if tag.element == 0x0000:
                # Group lengths would be stale after removals; they are optional.
                del ds[tag]
                continue
            self._clean_public(ds, ds[tag], in_dummy_sequence)

    def clean_file_meta(self, meta: Dataset) -> None:
        for tag in list(meta.keys()):
            action = self.table.action_for(tag)
            if action is Action.REMOVE:
                del meta[tag]
                self.counts["X"] += 1
        if "MediaStorageSOPInstanceUID" in meta:
            original = str(meta.MediaStorageSOPInstanceUID)
            meta.MediaStorageSOPInstanceUID = self.replacer.uid(original)

    def _clean_public(
        self, ds: Dataset, element: DataElement, in_dummy_sequence: bool
    ) -> None:
        keyword = element.keyword
        action = self.table.action_for(element.tag)
        if action is None:
            action = self._default_action(element, in_dummy_sequence)
        self.counts[action.value] += 1

        if keyword in _IDENTIFIERS and self.replacer.mode != "table":
            original = str(element.value or "")
            element.value = self.replacer.identifier(keyword, original, self.patient)
            return

        if action is Action.REMOVE:
            del ds[element.tag]
        elif action is Action.ZERO:
            element.value = [] if element.VR == "SQ" else None
        elif action in (Action.DUMMY, Action.CLEAN):
            if element.VR == "SQ":
                self._clean_items(element, in_dummy_sequence=True)
            elif element.VR == "UI":
                # A dummy UID is a replacement UID, mapped like every other
                # one so that references to it still match.
                self._replace_uids(element)
            else:
                self._set_dummy(ds, element)
        elif action is Action.UID:
            if element.VR == "SQ":
                self._clean_items(element, in_dummy_sequence=in_dummy_sequence)
            elif element.VR == "UI":
                self._replace_uids(element)
            else:
                self._set_dummy(ds, element)
        elif element.VR == "SQ":
            self._clean_items(element, in_dummy_sequence=in_dummy_sequence)

    def _default_action(self, element: DataElement, in_dummy_sequence: bool) -> Action:
        # Attributes the table does not list: person names and instance UIDs
        # are still identifying wherever they occur.
        if element.VR == "PN":
            return Action.ZERO
        if element.VR == "UI":
            return Action.UID
        if in_dummy_sequence and element.VR in _TEXT_VRS:
            # Text inside a sequence the table replaces with dummies (graphic
            # annotations, verifying observers) may quote a name.
            return Action.DUMMY
        return Action.KEEP

    def _clean_items(self, element: DataElement, *, in_dummy_sequence: bool) -> None:
        for item in element.value or []:
            self.clean(item, in_dummy_sequence=in_dummy_sequence)

    def _replace_uids(self, element: DataElement) -> None:
        values = element.value
        if values is None or values == "":
            return
        if isinstance(values, str):
            replaced = self.replacer.uid(values)
            self.uids_replaced += replaced != values
            element.value = replaced
            return
        new_values = [self.replacer.uid(str(value)) for value in values]
        self.uids_replaced += sum(
            new != str(old) for new, old in zip(new_values, values, strict=True)
        )
        element.value = new_values

    def _set_dummy(self, ds: Dataset, element: DataElement) -> None:
        if element.VR in _DUMMY_BY_VR:
            element.value = _DUMMY_BY_VR[element.VR]
        else:
            # Binary (OB, OW, UN and the like) and tag (AT) values have no
            # meaningful dummy, so they are removed. NOTE: removal breaks IOD
            # conformance where such an attribute is Type 1. Encapsulated
            # Document is one, but the pixel check quarantines those files.
            del ds[element.tag]

    def _clean_private(self, ds: Dataset, tag: BaseTag) -> None:
        if 0x0010 <= tag.element <= 0x00FF:
            # A private creator stays only while its block keeps an attribute.
            block = range((tag.element << 8), (tag.element << 8) + 0x100)
            block_keeps_attribute = any(
                BaseTag((tag.group << 16) | element) in ds
                and self._is_safe(ds, BaseTag((tag.group << 16) | element))
                for element in block
            )
            if not block_keeps_attribute:
                del ds[tag]
            return
        if self._is_safe(ds, tag):
            self.private_kept += 1
            element = ds[tag]
            if element.VR == "SQ":
                self._clean_items(element, in_dummy_sequence=False)
            return
        del ds[tag]
        self.private_removed += 1

    def _is_safe(self, ds: Dataset, tag: BaseTag) -> bool:
        if not self.table.safe_private or tag.element < 0x1000:
            return False
        creator_tag = BaseTag((tag.group << 16) | (tag.element >> 8))
        creator = ds.get(creator_tag)
        name = None if creator is None else str(creator.value)
        return self.table.is_safe_private(name, tag)


def _mark_deidentified(
    ds: Dataset, profile: str, pixels: dict[str, Any], private_kept: int
) -> None:
    ds.PatientIdentityRemoved = "YES"
    methods = [
        f"enclave profile {profile}",
        "DICOM PS3.15 Basic Application Confidentiality Profile",
    ]
    codes = [_CODE_BASIC]
    if pixels["pixel_data"]:
        methods.append("Clean Pixel Data Option: OCR text masking")
        codes.append(_CODE_CLEAN_PIXELS)
    if private_kept:
        methods.append("Retain Safe Private Option")
        codes.append(_CODE_SAFE_PRIVATE)
    ds.DeidentificationMethod = methods

    items = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = DicomSequence(items)

    if pixels["pixel_data"]:
        # Only now has every frame been masked and checked.
        ds.BurnedInAnnotation = "NO"


def _write(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    try:
        ds.save_as(buffer, enforce_file_format=True)
    except Exception as exc:
        raise DeidentificationError(
            "the de-identified DICOM file could not be written "
            f"({type(exc).__name__}); "
            "nothing was released"
        ) from exc
    return buffer.getvalue()


def _check_readback(output: bytes, pixels: dict[str, Any]) -> None:
    # Fail closed if the output does not decode to the frames that were checked.
    try:
        ds = pydicom.dcmread(io.BytesIO(output))
        if pixels["pixel_data"]:
            array = ds.pixel_array
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            rows, columns = int(ds.Rows), int(ds.Columns)
    except Exception as exc:
        raise DeidentificationError(
            f"the de-identified DICOM file does not read back ({type(exc).__name__}); "
            "nothing was released"
        ) from exc
    if not pixels["pixel_data"]:
        return
    expected = (pixels["frames"], pixels["rows"], pixels["columns"])
    if (frames, rows, columns) != expected or array.size == 0:
        raise DeidentificationError(
            f"the de-identified DICOM file has frames x rows x columns "
            f"{(frames, rows, columns)}, expected {expected}; nothing was released"
        )
