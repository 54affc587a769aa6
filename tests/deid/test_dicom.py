"""DICOM de-identification on pydicom's test files and on synthetic files."""

from __future__ import annotations

import csv
import io
import json
import re
import tomllib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.sequence import Sequence
from pydicom.uid import (
    ComprehensiveSRStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

from enclave.deid import dicom_profile
from enclave.deid.dicom import deidentify_dicom
from enclave.deid.dicom_profile import Action, SafePrivate, load_basic_profile
from enclave.errors import ConfigurationError, DeidentificationError, ValidationError
from tests.deid.test_text import draw_text

PATIENT_NAME = "张^伟"
PATIENT_ID = "20231187"
HOSPITAL = "北京协和医院"
KEY = b"k" * 32

REFERENCE_TABLE = Path(__file__).parent / "data" / "ps3_15_basic_profile.csv"
TABLE_FILE = Path(dicom_profile.__file__).with_name(dicom_profile.TABLE_FILE)

# The choice the program makes within each compound code of the standard.
RESOLVED = {"Z/D": "D", "X/D": "D", "X/Z/D": "D", "X/Z": "Z", "X/Z/U*": "U"}
TEXT_VRS = ("LO", "LT", "SH", "ST", "UT", "UC")

# Attributes the table removes, empties or replaces; each must be gone or
# hold no original value after de-identification.
IDENTIFYING = [
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientAddress",
    "OtherPatientIDs",
    "PatientTelephoneNumbers",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "OperatorsName",
    "PerformingPhysicianName",
    "AccessionNumber",
    "StudyID",
    "StudyDescription",
    "SeriesDescription",
    "ImageComments",
    "DeviceSerialNumber",
    "StationName",
    "StudyDate",
    "SeriesDate",
]


def bundled_file(name: str) -> bytes:
    """Return the bytes of a file shipped with pydicom (never downloaded)."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not bundled with this pydicom"
    with open(path, "rb") as handle:
        return handle.read()


def read(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def render_frames(count: int, color: bool) -> tuple[np.ndarray, list]:
    """Render ultrasound-like frames with burned-in identity text.

    Returns the frames and the text boxes as (box, frame index) pairs.
    """
    frames, boxes = [], []
    for index in range(count):
        rng = np.random.default_rng(index)
        base = rng.integers(0, 50, size=(240, 320), dtype=np.uint8)
        image = Image.fromarray(base).convert("RGB")
        for position, text, size in [
            ((8, 6), "张伟 男 45岁", 20),
            ((8, 34), f"住院号 {PATIENT_ID}", 18),
            ((150, 212), f"2023-11-05 14:32:0{index}", 16),
        ]:
            boxes.append((draw_text(image, position, text, size), index))
        array = np.asarray(image)
        frames.append(array if color else array[..., 0].copy())
    return np.stack(frames), boxes


def build_dicom(
    frames: np.ndarray,
    *,
    study_uid: str,
    frame_of_reference: str,
    syntax: str = ExplicitVRLittleEndian,
    referenced_sop: str | None = None,
    photometric: str | None = None,
) -> bytes:
    """Build an ultrasound multi-frame file with patient data everywhere."""
    color = frames.ndim == 4
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = frame_of_reference
    ds.Modality = "US"
    ds.Manufacturer = "ACME"
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19780312"
    ds.PatientSex = "M"
    ds.PatientAge = "045Y"
    ds.PatientAddress = "北京市东城区帅府园1号"
    ds.OtherPatientIDs = "110101197803120017"
    ds.PatientTelephoneNumbers = "13800138000"
    ds.InstitutionName = HOSPITAL
    ds.InstitutionAddress = "北京市东城区"
    ds.ReferringPhysicianName = "李^娜"
    ds.OperatorsName = "王^芳"
    ds.PerformingPhysicianName = "赵^磊"
    ds.AccessionNumber = "A20231105001"
    ds.StudyID = "S1187"
    ds.StudyDate = "20231105"
    ds.StudyTime = "143208"
    ds.SeriesDate = "20231105"
    ds.ContentDate = "20231105"
    ds.StudyDescription = "张伟 心脏超声"
    ds.SeriesDescription = "张伟 PLAX"
    ds.ImageComments = "患者张伟 复查"
    ds.DeviceSerialNumber = "SN-99812"
    ds.StationName = "US-ROOM-3"
    ds.BurnedInAnnotation = "YES"

    # Nested sequences: identifiers and UIDs at depth 1 and 2.
    code = Dataset()
    code.CodeValue = "T-32000"
    code.CodingSchemeDesignator = "SRT"
    code.CodeMeaning = "Heart"
    code.InstitutionName = HOSPITAL
    ds.AnatomicRegionSequence = Sequence([code])
    reference = Dataset()
    reference.ReferencedSOPClassUID = UltrasoundMultiFrameImageStorage
    reference.ReferencedSOPInstanceUID = referenced_sop or generate_uid()
    inner = Dataset()
    inner.PatientName = PATIENT_NAME
    inner.StudyInstanceUID = study_uid
    reference.SourceImageSequence = Sequence([inner])
    ds.ReferencedImageSequence = Sequence([reference])
    request = Dataset()
    request.RequestedProcedureID = "RP-1187"
    request.ScheduledProcedureStepID = "SPS-1187"
    ds.RequestAttributesSequence = Sequence([request])

    # A private block with a copy of the name and a private sequence.
    block = ds.private_block(0x0009, "ACME US 1.0", create=True)
    block.add_new(0x01, "LO", PATIENT_NAME)
    block.add_new(0x02, "LO", "harmless setting")
    private_item = Dataset()
    private_item.PatientID = PATIENT_ID
    block.add_new(0x03, "SQ", Sequence([private_item]))

    ds.SamplesPerPixel = 3 if color else 1
    ds.PhotometricInterpretation = photometric or ("RGB" if color else "MONOCHROME2")
    if color:
        ds.PlanarConfiguration = 0
    ds.NumberOfFrames = frames.shape[0]
    ds.Rows, ds.Columns = frames.shape[1], frames.shape[2]
    ds.BitsAllocated = frames.dtype.itemsize * 8
    ds.BitsStored = 12 if frames.dtype == np.uint16 else 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0

    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.SourceApplicationEntityTitle = "US-ROOM-3"
    ds.PixelData = frames.tobytes()

    if syntax == RLELossless:
        ds.compress(RLELossless, generate_instance_uid=False)
    elif syntax == JPEGBaseline8Bit:
        encoded = []
        for frame in frames:
            buffer = io.BytesIO()
            Image.fromarray(frame).save(buffer, "JPEG", quality=95, subsampling=1)
            encoded.append(buffer.getvalue())
        ds.PixelData = encapsulate(encoded)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        if color:
            ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.LossyImageCompression = "01"

    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def all_values(ds: Dataset) -> str:
    """Return the text of every element at every depth, for leak checks."""
    parts = []
    for element in ds.iterall():
        if element.VR not in ("OB", "OW", "SQ", "UN"):
            parts.append(str(element.value))
    return "\n".join(parts)


def assert_text_masked(output: Dataset, frames: np.ndarray, boxes: list) -> None:
    """Assert that the bright text pixels at every known box are now dark."""
    pixels = output.pixel_array
    gray = pixels.mean(axis=-1) if pixels.ndim == 4 else pixels
    source = frames.mean(axis=-1) if frames.ndim == 4 else frames
    for (x0, y0, x1, y1), index in boxes:
        text = source[index, y0:y1, x0:x1] > 200
        assert text.sum() > 20, (index, (x0, y0, x1, y1))
        after = gray[index, y0:y1, x0:x1][text]
        dark = float((after < 60).mean())
        assert dark >= 0.98, (index, (x0, y0, x1, y1), dark)


@pytest.fixture(scope="module")
def study():
    """Two files of one study with their frames, text boxes and outputs."""
    frames, boxes = render_frames(3, color=False)
    study_uid, frame_of_reference = generate_uid(), generate_uid()
    first = build_dicom(
        frames, study_uid=study_uid, frame_of_reference=frame_of_reference
    )
    first_sop = str(read(first).SOPInstanceUID)
    second = build_dicom(
        frames[:2],
        study_uid=study_uid,
        frame_of_reference=frame_of_reference,
        referenced_sop=first_sop,
    )
    uid_map: dict[str, str] = {}
    outputs = [
        deidentify_dicom(data, "baseline", uid_map=uid_map) for data in (first, second)
    ]
    return {
        "frames": frames,
        "boxes": boxes,
        "inputs": [first, second],
        "outputs": outputs,
        "uid_map": uid_map,
    }


@pytest.fixture(scope="module")
def small_study():
    """Two one-frame files of one study without text, for identifier checks."""
    frames = np.zeros((1, 64, 64), np.uint8)
    study_uid, frame_of_reference = generate_uid(), generate_uid()
    return [
        build_dicom(frames, study_uid=study_uid, frame_of_reference=frame_of_reference)
        for _ in range(2)
    ]


@pytest.fixture(scope="module")
def ultrasound():
    data = bundled_file("examples_ybr_color.dcm")
    return data, deidentify_dicom(data, "baseline", uid_map={})


def test_identifying_attributes_removed(study):
    source = read(study["inputs"][0])
    output = read(study["outputs"][0].data)

    for keyword in IDENTIFYING:
        original = str(source[keyword].value)
        value = output.get(keyword)
        assert value is None or str(value) in ("", "ANONYMIZED", "19000101"), keyword
        assert value is None or str(value) != original, keyword
    assert "RequestAttributesSequence" not in output
    assert "PatientAge" not in output


def test_identifiers_removed_inside_sequences(study):
    output = read(study["outputs"][0].data)

    region = output.AnatomicRegionSequence[0]
    assert region.CodeMeaning == "Heart"
    assert region.InstitutionName == "ANONYMIZED"
    inner = output.ReferencedImageSequence[0].SourceImageSequence[0]
    assert str(inner.PatientName) == ""
    text = all_values(output)
    for secret in ("张", "伟", PATIENT_ID, HOSPITAL, "13800138000", "李", "王^芳"):
        assert secret not in text, secret


def test_uids_consistent_within_study(study):
    sources = [read(data) for data in study["inputs"]]
    outputs = [read(result.data) for result in study["outputs"]]

    assert outputs[0].StudyInstanceUID == outputs[1].StudyInstanceUID
    assert outputs[0].StudyInstanceUID != sources[0].StudyInstanceUID
    assert outputs[0].FrameOfReferenceUID == outputs[1].FrameOfReferenceUID
    assert outputs[0].FrameOfReferenceUID != sources[0].FrameOfReferenceUID
    assert outputs[0].SOPInstanceUID != outputs[1].SOPInstanceUID
    assert outputs[0].SOPInstanceUID != sources[0].SOPInstanceUID
    assert outputs[0].SeriesInstanceUID != sources[0].SeriesInstanceUID
    # The second file refers to the first one; the reference follows the change.
    reference = outputs[1].ReferencedImageSequence[0]
    assert reference.ReferencedSOPInstanceUID == outputs[0].SOPInstanceUID
    nested = reference.SourceImageSequence[0]
    assert nested.StudyInstanceUID == outputs[0].StudyInstanceUID
    assert outputs[0].file_meta.MediaStorageSOPInstanceUID == outputs[0].SOPInstanceUID
    assert outputs[0].SOPClassUID == sources[0].SOPClassUID
    assert outputs[0].StudyInstanceUID.startswith("2.25.")


def test_private_attributes_removed(study):
    output = read(study["outputs"][0].data)

    assert not [element.tag for element in output if element.tag.is_private]
    assert study["outputs"][0].report["private_removed"] == 3


def test_safe_private_attribute_kept(small_study):
    safe = SafePrivate("ACME US 1.0", 0x0009, 0x02)

    result = deidentify_dicom(small_study[1], "baseline", safe_private=[safe])

    output = read(result.data)
    block = output.private_block(0x0009, "ACME US 1.0")
    assert block[0x02].value == "harmless setting"
    assert block.get_tag(0x01) not in output
    assert block.get_tag(0x03) not in output
    codes = [item.CodeValue for item in output.DeidentificationMethodCodeSequence]
    assert "113111" in codes


def test_file_meta_cleaned(study):
    output = read(study["outputs"][0].data)

    assert "SourceApplicationEntityTitle" not in output.file_meta


def test_marked_deidentified(study):
    output = read(study["outputs"][0].data)

    assert output.PatientIdentityRemoved == "YES"
    assert output.BurnedInAnnotation == "NO"
    codes = [item.CodeValue for item in output.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113101"]
    schemes = {
        item.CodingSchemeDesignator
        for item in output.DeidentificationMethodCodeSequence
    }
    assert schemes == {"DCM"}
    assert any("Basic" in value for value in output.DeidentificationMethod)


def test_burned_in_text_masked_native(study):
    output = read(study["outputs"][0].data)

    assert output.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert int(output.NumberOfFrames) == 3
    assert_text_masked(output, study["frames"], study["boxes"])


@pytest.mark.parametrize(
    ("syntax", "color"),
    [(RLELossless, True), (JPEGBaseline8Bit, True), (JPEGBaseline8Bit, False)],
)
def test_burned_in_text_masked_compressed(syntax, color):
    frames, boxes = render_frames(2, color=color)
    data = build_dicom(
        frames,
        study_uid=generate_uid(),
        frame_of_reference=generate_uid(),
        syntax=syntax,
    )
    assert_source_text_visible = read(data).pixel_array
    assert assert_source_text_visible.shape[0] == 2

    result = deidentify_dicom(data, "education")

    output = read(result.data)
    assert output.file_meta.TransferSyntaxUID == syntax
    assert int(output.NumberOfFrames) == 2
    assert output.BurnedInAnnotation == "NO"
    assert_text_masked(output, frames, boxes)
    assert result.report["pixels"]["transfer_syntax_out"] == syntax


def test_ybr_full_native_text_masked():
    frames, boxes = render_frames(2, color=True)
    ybr = convert_color_space(frames, "RGB", "YBR_FULL")
    data = build_dicom(
        ybr,
        study_uid=generate_uid(),
        frame_of_reference=generate_uid(),
        photometric="YBR_FULL",
    )

    result = deidentify_dicom(data, "baseline")

    output = read(result.data)
    # pydicom decodes YCbCr as RGB, and the cleaned pixels are stored as RGB.
    assert output.PhotometricInterpretation == "RGB"
    assert output.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert_text_masked(output, frames, boxes)


def test_monochrome1_12_bit_text_masked():
    frames, boxes = render_frames(2, color=False)
    # 12-bit MONOCHROME1: the display inverts, so white text is stored as 0.
    stored = (4095 - frames.astype(np.uint16) * 16).astype(np.uint16)
    data = build_dicom(
        stored,
        study_uid=generate_uid(),
        frame_of_reference=generate_uid(),
        photometric="MONOCHROME1",
    )

    result = deidentify_dicom(data, "baseline")

    output = read(result.data)
    assert output.PhotometricInterpretation == "MONOCHROME1"
    assert output.BitsStored == 12
    pixels = output.pixel_array
    for (x0, y0, x1, y1), index in boxes:
        text = frames[index, y0:y1, x0:x1] > 200
        # Black on a MONOCHROME1 display is the highest stored value.
        assert (pixels[index, y0:y1, x0:x1][text] >= 4095 - 50 * 16).all(), index


def test_report_contains_no_identifier(study):
    report = json.dumps(study["outputs"][0].report, ensure_ascii=False)

    for secret in ("张", PATIENT_ID, HOSPITAL, "A20231105001", "S1187"):
        assert secret not in report, secret
    assert study["outputs"][0].report["pixels"]["frames"] == 3


def test_new_tech_research_random_identifiers(small_study):
    first_map: dict[str, str] = {}
    second_map: dict[str, str] = {}

    outputs = [
        deidentify_dicom(small_study[0], "new-tech-research", uid_map=first_map),
        deidentify_dicom(small_study[1], "new-tech-research", uid_map=first_map),
        deidentify_dicom(small_study[0], "new-tech-research", uid_map=second_map),
    ]

    a, b, c = (read(result.data) for result in outputs)
    assert a.PatientID
    assert a.PatientID != PATIENT_ID
    assert a.PatientID == b.PatientID
    assert str(a.PatientName) == a.PatientID
    assert a.AccessionNumber == b.AccessionNumber
    assert a.StudyInstanceUID == b.StudyInstanceUID
    assert c.PatientID != a.PatientID
    assert c.StudyInstanceUID != a.StudyInstanceUID


def test_ai_diagnosis_keyed_pseudonyms(small_study):
    outputs = [
        deidentify_dicom(small_study[0], "ai-diagnosis", uid_map={}, pseudonym_key=key)
        for key in (KEY, KEY, b"o" * 32)
    ]

    a, b, c = (read(result.data) for result in outputs)
    assert a.PatientID == b.PatientID
    assert a.StudyInstanceUID == b.StudyInstanceUID
    assert a.PatientID != PATIENT_ID
    assert c.PatientID != a.PatientID
    assert c.StudyInstanceUID != a.StudyInstanceUID
    assert len(a.AccessionNumber) <= 16
    assert a.StudyInstanceUID.startswith("2.25.")


def test_ai_diagnosis_requires_key(small_study):
    with pytest.raises(ValidationError, match="needs pseudonym_key"):
        deidentify_dicom(small_study[0], "ai-diagnosis")


def test_unknown_profile_rejected(small_study):
    with pytest.raises(ValidationError, match="'research' is unknown"):
        deidentify_dicom(small_study[0], "research")


def test_not_dicom_rejected():
    with pytest.raises(ValidationError, match="not a DICOM file"):
        deidentify_dicom(b"\x00" * 300, "baseline")


def test_undecodable_pixel_data_quarantined():
    # JPEG Lossless, which neither Pillow nor pydicom's own decoders read.
    data = bundled_file("SC_rgb_jpeg_gdcm.dcm")

    with pytest.raises(
        DeidentificationError, match="quarantined.*could not be decoded"
    ):
        deidentify_dicom(data, "baseline")


def test_truncated_pixel_data_quarantined():
    frames, _boxes = render_frames(2, color=False)
    ds = read(
        build_dicom(frames, study_uid=generate_uid(), frame_of_reference=generate_uid())
    )
    ds.PixelData = ds.PixelData[:1000]
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)

    with pytest.raises(DeidentificationError, match="quarantined"):
        deidentify_dicom(buffer.getvalue(), "baseline")


def test_unsupported_photometric_quarantined():
    ds = read(bundled_file("CT_small.dcm"))
    ds.PhotometricInterpretation = "PALETTE COLOR"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)

    with pytest.raises(DeidentificationError, match="quarantined.*'PALETTE COLOR'"):
        deidentify_dicom(buffer.getvalue(), "baseline")


def test_encapsulated_document_quarantined():
    ds = read(bundled_file("rtplan.dcm"))
    ds.EncapsulatedDocument = b"%PDF-1.4 patient report"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)

    with pytest.raises(
        DeidentificationError, match="quarantined.*EncapsulatedDocument"
    ):
        deidentify_dicom(buffer.getvalue(), "baseline")


def test_ct_private_attributes_removed():
    source = read(bundled_file("CT_small.dcm"))
    assert any(element.tag.is_private for element in source)

    result = deidentify_dicom(bundled_file("CT_small.dcm"), "baseline")

    output = read(result.data)
    assert not any(element.tag.is_private for element in output.iterall())
    assert str(output.PatientName) == ""
    assert output.pixel_array.shape == source.pixel_array.shape
    assert result.report["pixels"]["transfer_syntax_out"] == ExplicitVRLittleEndian


def test_rt_plan_sequences_cleaned():
    source = read(bundled_file("rtplan.dcm"))

    result = deidentify_dicom(bundled_file("rtplan.dcm"), "baseline")

    output = read(result.data)
    assert str(output.PatientName) == ""
    assert output.SOPInstanceUID != source.SOPInstanceUID
    references = output.ReferencedStructureSetSequence
    assert references[0].ReferencedSOPInstanceUID != (
        source.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID
    )
    assert "PixelData" not in output
    assert "BurnedInAnnotation" not in output
    codes = [item.CodeValue for item in output.DeidentificationMethodCodeSequence]
    assert codes == ["113100"]


def test_rle_monochrome_round_trip():
    source = read(bundled_file("MR_small_RLE.dcm"))

    result = deidentify_dicom(bundled_file("MR_small_RLE.dcm"), "clinical-research")

    output = read(result.data)
    assert output.file_meta.TransferSyntaxUID == RLELossless
    assert output.pixel_array.shape == source.pixel_array.shape


def test_ultrasound_loop_deidentified(ultrasound):
    data, result = ultrasound
    source, output = read(data), read(result.data)

    assert int(output.NumberOfFrames) == 30
    assert output.pixel_array.shape == (30, 240, 320, 3)
    assert output.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert output.PatientIdentityRemoved == "YES"
    assert output.BurnedInAnnotation == "NO"
    assert str(output.PatientName) == ""
    assert output.StudyInstanceUID != source.StudyInstanceUID
    assert output.SOPInstanceUID != source.SOPInstanceUID
    assert not any(element.tag.is_private for element in output.iterall())


def test_ultrasound_annotations_masked(ultrasound):
    _data, result = ultrasound
    output = read(result.data).pixel_array

    # The probe name "PLA" and the scanner labels at the top corners are
    # burned into every frame of the loop.
    for x0, y0, x1, y1 in [(2, 1, 30, 13), (302, 24, 314, 32)]:
        region = output[:, y0:y1, x0:x1].astype(int)
        assert region.max(axis=(1, 2, 3)).max() < 60
    assert result.report["pixels"]["text"]["static_regions"] >= 10


def read_reference_table() -> tuple[str, dict[str, str]]:
    """Return the edition and the (tag -> action) rows of the reference list."""
    text = REFERENCE_TABLE.read_text(encoding="utf-8")
    edition = re.search(r"PS3\.15 (\d{4}[a-e])", text)
    assert edition is not None, "the reference list names no edition"
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    # The list writes tags as ggggeeee and the table file as (gggg,eeee).
    rows = {
        f"({row['tag'][:4]},{row['tag'][4:]})": row["action"]
        for row in csv.DictReader(lines)
    }
    return edition.group(1), rows


def test_table_matches_standard_reference():
    edition, reference = read_reference_table()
    data = tomllib.loads(TABLE_FILE.read_text(encoding="utf-8"))
    table = {tag: row["action"] for tag, row in data["basic_profile"].items()}

    assert data["edition"] == edition
    # The reference lists private attributes as one row; the table file has
    # its own [private] section for them.
    assert reference.pop("(gggg,eexx)") == "X"
    missing = sorted(set(reference) - set(table))
    extra = sorted(set(table) - set(reference))
    changed = sorted(
        f"{tag}: {table[tag]} instead of {reference[tag]}"
        for tag in set(table) & set(reference)
        if table[tag] != reference[tag]
    )
    assert not missing, f"rows of the standard missing from the table: {missing}"
    assert not extra, f"rows not in the standard (move them to [additions]): {extra}"
    assert not changed, f"actions that differ from the standard: {changed}"
    assert len(table) > 600


def test_table_additions_not_in_standard():
    _edition, reference = read_reference_table()
    data = tomllib.loads(TABLE_FILE.read_text(encoding="utf-8"))

    additions = data["additions"]
    assert additions
    assert not set(additions) & set(reference)
    assert {row["action"] for row in additions.values()} == {"X"}


def test_table_resolves_every_row():
    _edition, reference = read_reference_table()
    table = load_basic_profile()

    assert table.edition == "2026d"
    for tag_text, code in reference.items():
        if "x" in tag_text:
            continue
        tag = pydicom.tag.Tag(int(tag_text[1:5] + tag_text[6:10], 16))
        assert table.codes[tag] == code, tag_text
        assert table.action_for(tag) == Action(RESOLVED.get(code, code)), tag_text


def test_table_key_attributes():
    table = load_basic_profile()

    def action(keyword: str) -> str:
        found = table.action_for(pydicom.datadict.tag_for_keyword(keyword))
        assert found is not None, keyword
        return found.value

    assert action("PatientName") == "Z"
    # Z/D resolves to D, the choice that is valid for every IOD.
    assert table.codes[pydicom.tag.Tag("PatientID")] == "Z/D"
    assert action("PatientID") == "D"
    assert action("StudyInstanceUID") == "U"
    assert action("InstitutionName") == "D"
    assert action("IconImageSequence") == "X"
    assert action("ReferencedImageSequence") == "U"
    assert action("ReferencedStudySequence") == "Z"
    assert action("ContentSequence") == "D"
    assert table.action_for(pydicom.tag.Tag("SoftwareVersions")) is None
    assert table.action_for(pydicom.tag.Tag("Modality")) is None


@pytest.mark.parametrize(
    ("group", "element", "expected"),
    [
        (0x5000, 0x3000, "X"),
        (0x501E, 0x0010, "X"),
        (0x6000, 0x3000, "X"),
        (0x6002, 0x4000, "X"),
        (0x6000, 0x0010, None),
        (0x6000, 0x0050, None),
    ],
)
def test_table_repeating_groups(group, element, expected):
    action = load_basic_profile().action_for(pydicom.tag.Tag(group, element))

    assert (None if action is None else action.value) == expected


def test_table_rejects_mismatched_keyword():
    with pytest.raises(ConfigurationError, match="'PatientID'"):
        dicom_profile._check_keyword("(0010,0010)", 0x00100010, "PatientID")
    with pytest.raises(ConfigurationError, match="not a tag"):
        dicom_profile._parse_tag("(0010,001)")
    # Tags newer than pydicom's data dictionary are accepted as written.
    dicom_profile._check_keyword("(3004,007F)", 0x3004007F, "DoseCalculationModelName")


def assert_table_applied(
    source: Dataset, output: Dataset, *, in_dummy_sequence: bool = False
) -> None:
    """Assert the table's action on every public attribute, at every depth.

    Inside a sequence with the action D, text that the table does not list
    must be a dummy too.
    """
    table = load_basic_profile()
    for element in source:
        if element.tag.is_private or element.tag.element == 0:
            continue
        name = element.keyword or str(element.tag)
        action = table.action_for(element.tag)
        after = output.get(element.tag)
        if action is None and element.VR == "PN":
            action = Action.ZERO
        elif action is None and element.VR == "UI":
            action = Action.UID
        elif action is None and in_dummy_sequence and element.VR in TEXT_VRS:
            action = Action.DUMMY

        if action is Action.REMOVE:
            assert after is None, name
            continue
        if action is Action.ZERO:
            assert after is not None, name
            assert after.is_empty, name
            continue
        if action is None and element.VR != "SQ":
            continue
        assert after is not None, name
        if element.VR == "SQ":
            assert len(after.value) == len(element.value), name
            for before_item, after_item in zip(element.value, after.value, strict=True):
                assert_table_applied(
                    before_item,
                    after_item,
                    in_dummy_sequence=in_dummy_sequence or action is Action.DUMMY,
                )
        elif element.VR == "UI":
            if not element.is_empty and not str(element.value).startswith(
                "1.2.840.10008."
            ):
                assert after.value != element.value, name
                assert str(after.value).startswith("2.25."), name
        elif action is Action.DUMMY:
            assert not after.is_empty, name
            if not element.is_empty:
                assert after.value != element.value, name


def code_item(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "99LOCAL"
    item.CodeMeaning = meaning
    return item


def build_nested_file(
    *,
    study_uid: str,
    annotation_uid: str,
    referenced_sop: str,
    syntax: str = ExplicitVRLittleEndian,
) -> bytes:
    """Build an SR file without pixel data that uses rows of the 2026d table.

    Some of the attributes (Gender Identity, Dose Calculation Model Name) are
    newer than pydicom's data dictionary, so they are added by tag and VR.
    """
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = ComprehensiveSRStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19780312"
    ds.ContentDate = "20231105"
    ds.InstitutionName = HOSPITAL
    ds.add_new(0x3004007F, "LO", "张伟 dose model")  # Dose Calculation Model Name
    ds.add_new(0x00102162, "UC", ["Han"])  # Ethnic Groups
    gender = Dataset()
    gender.add_new(0x00100045, "UT", "张伟 comment")  # Gender Identity Comment
    ds.add_new(0x00100041, "SQ", Sequence([gender]))  # Gender Identity Sequence
    ds.SourceSerialNumber = "SRC-4411"

    study_reference = Dataset()
    study_reference.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study_reference.ReferencedSOPInstanceUID = study_uid
    ds.ReferencedStudySequence = Sequence([study_reference])
    step = Dataset()
    step.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.3"
    step.ReferencedSOPInstanceUID = referenced_sop
    ds.ReferencedPerformedProcedureStepSequence = Sequence([step])

    operator = Dataset()
    operator.InstitutionName = HOSPITAL
    operator.PersonTelephoneNumbers = "13800138000"
    operator.PersonIdentificationCodeSequence = Sequence(
        [code_item("EMP-0042", "王芳")]
    )
    ds.OperatorIdentificationSequence = Sequence([operator])

    # SR content: depth 1 and 2, with names, dates and a UID reference.
    observer = Dataset()
    observer.RelationshipType = "HAS OBS CONTEXT"
    observer.ValueType = "PNAME"
    observer.ConceptNameCodeSequence = Sequence([code_item("121008", "Observer")])
    observer.PersonName = "赵^磊"
    finding = Dataset()
    finding.RelationshipType = "CONTAINS"
    finding.ValueType = "TEXT"
    finding.ConceptNameCodeSequence = Sequence([code_item("121071", "Finding")])
    finding.TextValue = f"患者张伟 {PATIENT_ID} 心功能正常"
    finding.Date = "20231105"
    finding.UID = annotation_uid
    finding.ContentSequence = Sequence([observer])
    ds.ContentSequence = Sequence([finding])

    group = Dataset()
    group.AnnotationGroupUID = annotation_uid
    group.AnnotationGroupLabel = "张伟 lesion"
    group.AnnotationGroupDescription = "drawn by 李娜"
    ds.AnnotationGroupSequence = Sequence([group])

    # Depth 3: an image reference whose nested item repeats identifying data.
    inner = Dataset()
    inner.ReferencedSOPClassUID = UltrasoundMultiFrameImageStorage
    inner.ReferencedSOPInstanceUID = referenced_sop
    inner.InstitutionName = HOSPITAL
    inner.add_new(0x00100045, "UT", "张伟 comment")
    inner_block = inner.private_block(0x0011, "ACME SR 1.0", create=True)
    inner_block.add_new(0x01, "LO", PATIENT_NAME)
    source = Dataset()
    source.ReferencedSOPClassUID = UltrasoundMultiFrameImageStorage
    source.ReferencedSOPInstanceUID = referenced_sop
    source.SourceImageSequence = Sequence([inner])
    ds.ReferencedImageSequence = Sequence([source])

    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def nested_study():
    """Two SR files of one study that share an annotation UID and a reference."""
    study_uid = generate_uid()
    annotation_uid = generate_uid()
    referenced = generate_uid()
    inputs = [
        build_nested_file(
            study_uid=study_uid,
            annotation_uid=annotation_uid,
            referenced_sop=referenced,
        )
        for _ in range(2)
    ]
    uid_map: dict[str, str] = {}
    outputs = [deidentify_dicom(data, "baseline", uid_map=uid_map) for data in inputs]
    return inputs, outputs


def test_nested_table_actions_applied(nested_study):
    inputs, outputs = nested_study
    source, output = read(inputs[0]), read(outputs[0].data)

    assert_table_applied(source, output)


def test_nested_new_rows_removed(nested_study):
    _inputs, outputs = nested_study
    output = read(outputs[0].data)

    assert 0x3004007F not in output
    assert 0x00102162 not in output
    assert 0x00100041 not in output
    inner = output.ReferencedImageSequence[0].SourceImageSequence[0]
    assert 0x00100045 not in inner
    assert inner.InstitutionName == "ANONYMIZED"
    assert not [element.tag for element in inner if element.tag.is_private]


def test_nested_compound_codes_resolved(nested_study):
    inputs, outputs = nested_study
    source, output = read(inputs[0]), read(outputs[0].data)

    assert output.PatientID == "ANONYMIZED"
    assert str(output.PatientName) == ""
    assert output.ContentDate == "19000101"
    assert output.InstitutionName == "ANONYMIZED"
    # X/Z: kept with an empty value.
    assert "SourceSerialNumber" in output
    assert output.SourceSerialNumber in ("", None)
    assert len(output.ReferencedStudySequence) == 0
    # X/Z/D on a sequence: the items stay and their values are replaced.
    step = output.ReferencedPerformedProcedureStepSequence[0]
    assert step.ReferencedSOPInstanceUID != (
        source.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID
    )
    # X/D on a sequence: text becomes a dummy and telephone numbers go.
    operator = output.OperatorIdentificationSequence[0]
    assert operator.InstitutionName == "ANONYMIZED"
    assert "PersonTelephoneNumbers" not in operator
    assert operator.PersonIdentificationCodeSequence[0].CodeValue == "ANONYMIZED"


def test_nested_content_sequence_dummies(nested_study):
    inputs, outputs = nested_study
    source, output = read(inputs[0]), read(outputs[0].data)

    finding = output.ContentSequence[0]
    assert finding.ValueType == "TEXT"
    assert finding.TextValue == "ANONYMIZED"
    assert finding.Date == "19000101"
    assert finding.UID != source.ContentSequence[0].UID
    observer = finding.ContentSequence[0]
    assert str(observer.PersonName) == "ANONYMIZED"
    text = all_values(output)
    for secret in ("张", "伟", PATIENT_ID, HOSPITAL, "13800138000", "王芳", "赵", "李娜"):
        assert secret not in text, secret
    assert "EMP-0042" not in text
    assert "SRC-4411" not in text


def test_nested_uids_consistent_within_study(nested_study):
    inputs, outputs = nested_study
    sources = [read(data) for data in inputs]
    first, second = (read(result.data) for result in outputs)

    # Annotation Group UID has the action D; its dummy is a mapped UID.
    original = sources[0].AnnotationGroupSequence[0].AnnotationGroupUID
    replaced = first.AnnotationGroupSequence[0].AnnotationGroupUID
    assert replaced != original
    assert replaced.startswith("2.25.")
    assert second.AnnotationGroupSequence[0].AnnotationGroupUID == replaced
    # The same UID in another attribute gets the same replacement.
    assert first.ContentSequence[0].UID == replaced
    assert "AnnotationGroupDescription" not in first.AnnotationGroupSequence[0]
    assert first.AnnotationGroupSequence[0].AnnotationGroupLabel == "ANONYMIZED"
    inner = first.ReferencedImageSequence[0].SourceImageSequence[0]
    outer = second.ReferencedPerformedProcedureStepSequence[0]
    assert inner.ReferencedSOPInstanceUID == outer.ReferencedSOPInstanceUID
    assert first.StudyInstanceUID == second.StudyInstanceUID
    assert first.StudyInstanceUID != sources[0].StudyInstanceUID
    assert first.SOPInstanceUID != second.SOPInstanceUID


def test_nested_file_marked_without_pixels(nested_study):
    _inputs, outputs = nested_study
    output = read(outputs[0].data)

    assert output.PatientIdentityRemoved == "YES"
    codes = [item.CodeValue for item in output.DeidentificationMethodCodeSequence]
    assert codes == ["113100"]
    # Without pixel data there is nothing to clean, so nothing is claimed.
    assert "BurnedInAnnotation" not in output
    assert outputs[0].report["options"] == []


def test_implicit_vr_unknown_rows_removed():
    # Implicit VR files carry no VR, so pydicom reads tags that its data
    # dictionary lacks as UN; the table still applies by tag.
    data = build_nested_file(
        study_uid=generate_uid(),
        annotation_uid=generate_uid(),
        referenced_sop=generate_uid(),
        syntax=ImplicitVRLittleEndian,
    )
    with pytest.warns(UserWarning, match="VR lookup failed"):
        source = read(data)
        source[0x3004007F]
    assert source[0x3004007F].VR == "UN"

    output = read(deidentify_dicom(data, "baseline").data)

    assert 0x3004007F not in output
    assert 0x00102162 not in output
    assert 0x00100041 not in output
    assert "张" not in all_values(output)


def test_ultrasound_table_actions_applied(ultrasound):
    data, result = ultrasound
    source, output = read(data), read(result.data)

    assert_table_applied(source, output)
    assert output.PatientID == "ANONYMIZED"
    assert output.SoftwareVersions == source.SoftwareVersions
    assert "PerformedProcedureStepID" not in output
    assert "SourceApplicationEntityTitle" not in output.file_meta
    codes = [item.CodeValue for item in output.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113101"]
