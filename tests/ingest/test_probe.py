from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import av
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

from enclave.catalog.models import MediaType
from enclave.errors import IngestError
from enclave.ingest import MAX_DIMENSION, probe, probe_bytes

MakeVideo = Callable[..., Path]


def remux_faststart(source: Path, target: Path) -> Path:
    """Copy the video packets of ``source`` into an MP4 whose index comes first."""
    with (
        av.open(str(source)) as src,
        av.open(str(target), "w", options={"movflags": "+faststart"}) as out,
    ):
        stream = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is None:
                continue
            packet.stream = stream
            out.mux(packet)
    return target


def write_dicom(path: Path, *, frames: int = 4, pixels: bool = True) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "US"
    dataset.Rows = 16
    dataset.Columns = 24
    dataset.NumberOfFrames = frames
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = 8
    dataset.BitsStored = 8
    dataset.HighBit = 7
    dataset.PixelRepresentation = 0
    dataset.FrameTime = 40.0
    if pixels:
        dataset.PixelData = bytes(range(256)) * (16 * 24 * frames // 256)
    dataset.save_as(path, enforce_file_format=True)
    return path


def test_probe_carphone(carphone_path: Path) -> None:
    result = probe(carphone_path)

    assert result.media_type is MediaType.VIDEO
    assert result.container == "mp4"
    assert result.video_codec == "h264"
    assert (result.width, result.height) == (176, 144)
    assert result.fps == pytest.approx(29.97, abs=0.01)
    assert result.frame_count == 120
    assert result.duration_s == pytest.approx(4.004, abs=0.01)
    assert result.rotation == 0
    assert not result.variable_frame_rate
    assert not result.has_audio
    assert result.size == carphone_path.stat().st_size
    assert len(result.sha256) == 64


def test_probe_bikes(bikes_path: Path) -> None:
    result = probe(bikes_path)

    assert (result.width, result.height) == (640, 272)
    assert result.fps == 25.0
    assert result.frame_count == 250
    assert result.duration_s == pytest.approx(10.0)
    assert not result.variable_frame_rate


def test_probe_ultrasound_loop(ultrasound_path: Path) -> None:
    result = probe(ultrasound_path)

    assert result.media_type is MediaType.DICOM
    assert result.container == "dicom"
    assert result.frame_count == 30
    assert (result.width, result.height) == (320, 240)
    assert result.fps == pytest.approx(30.0, abs=0.01)
    assert result.duration_s == pytest.approx(1.0, abs=0.01)
    assert result.extra["photometric_interpretation"] == "YBR_FULL_422"
    assert result.extra["transfer_syntax_uid"] == "1.2.840.10008.1.2.4.50"
    assert result.video_codec == "JPEG Baseline (Process 1)"


def test_probe_dicom_without_extension(ultrasound_path: Path, tmp_path: Path) -> None:
    target = tmp_path / "IM0001"
    target.write_bytes(ultrasound_path.read_bytes())

    assert probe(target).frame_count == 30


def test_probe_native_dicom(tmp_path: Path) -> None:
    result = probe(write_dicom(tmp_path / "loop.dcm", frames=4))

    assert result.frame_count == 4
    assert result.fps == 25.0
    assert result.extra["fps_source"] == "FrameTime"


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_probe_rotation(make_video: MakeVideo, rotation: int) -> None:
    path = make_video(f"rotated{rotation}.mov", rotation=rotation)

    result = probe(path)

    assert result.rotation == rotation
    assert result.container == "mov"


@pytest.mark.parametrize("name", ["vfr.mp4", "vfr.mkv"])
def test_probe_variable_frame_rate(make_video: MakeVideo, name: str) -> None:
    result = probe(make_video(name, variable_frame_rate=True, frames=20))

    assert result.variable_frame_rate
    assert result.frame_count == 20


def test_probe_constant_rate_mkv(make_video: MakeVideo) -> None:
    # A 1 ms time base rounds 30 fps intervals to 33 and 34 ms.
    result = probe(make_video("cfr.mkv", fps=30, frames=20))

    assert not result.variable_frame_rate
    assert result.frame_count == 20
    assert result.fps == 30.0


def test_probe_hevc(make_video: MakeVideo) -> None:
    result = probe(make_video("hevc.mp4", codec="hevc", frames=12))

    assert result.video_codec == "hevc"
    assert result.frame_count == 12


@pytest.mark.parametrize(
    ("name", "options", "container"),
    [
        ("clip.mkv", {"audio": True}, "mkv"),
        ("clip.avi", {"codec": "mpeg4"}, "avi"),
        ("clip.mov", {}, "mov"),
    ],
)
def test_probe_containers(
    make_video: MakeVideo, name: str, options: dict, container: str
) -> None:
    result = probe(make_video(name, frames=15, **options))

    assert result.container == container
    assert result.frame_count == 15
    assert result.has_audio == options.get("audio", False)


def test_probe_bytes_matches_probe(carphone_path: Path) -> None:
    from_file = probe(carphone_path)
    from_memory = probe_bytes(carphone_path.read_bytes(), "carphone.mp4")

    assert from_memory == from_file


def test_missing_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="missing.mp4: file not found"):
        probe(tmp_path / "missing.mp4")


def test_zero_byte_rejected(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.touch()

    with pytest.raises(IngestError, match=r"empty.mp4: the file is empty \(0 bytes\)"):
        probe(path)


def test_folder_rejected(tmp_path: Path) -> None:
    folder = tmp_path / "clip.mp4"
    folder.mkdir()

    with pytest.raises(IngestError, match="is a folder"):
        probe(folder)


def test_text_named_mp4_rejected(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("patient video notes\n")

    with pytest.raises(
        IngestError, match="notes.mp4: the file contains text, not video"
    ):
        probe(path)


def test_image_named_avi_rejected(tmp_path: Path) -> None:
    path = tmp_path / "frame.avi"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))

    with pytest.raises(IngestError, match="contains a PNG image"):
        probe(path)


def test_mkv_named_mp4_rejected(make_video: MakeVideo) -> None:
    path = make_video("clip.mkv")
    wrong = path.rename(path.with_name("clip.mp4"))

    with pytest.raises(IngestError) as caught:
        probe(wrong)

    message = str(caught.value)
    assert "clip.mp4" in message
    assert "extension .mp4" in message
    assert "Matroska (MKV)" in message
    assert "rename it to clip.mkv" in message


def test_mp4_named_dcm_rejected(carphone_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "scan.dcm"
    path.write_bytes(carphone_path.read_bytes())

    with pytest.raises(IngestError, match="rename it to scan.mp4"):
        probe(path)


def test_unknown_extension_rejected(carphone_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "clip.webm"
    path.write_bytes(carphone_path.read_bytes())

    with pytest.raises(
        IngestError, match=r"extension '.webm' is not accepted.*clip.mp4"
    ):
        probe(path)


def test_truncated_mp4_rejected(carphone_path: Path, tmp_path: Path) -> None:
    # carphone keeps its index (moov) at the end, so a cut copy has none.
    path = tmp_path / "cut.mp4"
    path.write_bytes(carphone_path.read_bytes()[:300_000])

    with pytest.raises(IngestError, match="cut.mp4: .*truncated"):
        probe(path)


@pytest.mark.parametrize("fraction", [0.3, 0.95, 0.999])
def test_truncated_faststart_mp4_rejected(
    carphone_path: Path, tmp_path: Path, fraction: float
) -> None:
    whole = remux_faststart(carphone_path, tmp_path / "whole.mp4").read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(whole[: int(len(whole) * fraction)])

    with pytest.raises(IngestError, match="truncated"):
        probe(path)


def test_damaged_mp4_data_rejected(carphone_path: Path, tmp_path: Path) -> None:
    data = bytearray(
        remux_faststart(carphone_path, tmp_path / "whole.mp4").read_bytes()
    )
    start = data.find(b"mdat") + (len(data) - data.find(b"mdat")) // 2
    data[start:] = bytes(len(data) - start)
    path = tmp_path / "zeroed.mp4"
    path.write_bytes(bytes(data))

    with pytest.raises(IngestError, match="zeroed.mp4: .*truncated or damaged"):
        probe(path)


@pytest.mark.parametrize("name", ["cut.mkv", "cut.avi"])
def test_truncated_mkv_and_avi_rejected(make_video: MakeVideo, name: str) -> None:
    codec = "mpeg4" if name.endswith(".avi") else "h264"
    path = make_video(name, codec=codec, frames=40, width=160, height=120)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 4])

    with pytest.raises(IngestError, match=f"{name}: .*truncated"):
        probe(path)


def test_fewer_frames_than_index_rejected(make_video: MakeVideo) -> None:
    # Cut an AVI and repair its RIFF size, so only the frame count in the
    # header shows that frames are missing.
    path = make_video("short.avi", codec="mpeg4", frames=40, width=160, height=120)
    data = bytearray(path.read_bytes()[: path.stat().st_size // 4 * 2])
    data[4:8] = struct.pack("<I", len(data) - 8)
    path.write_bytes(bytes(data))

    with pytest.raises(IngestError, match="index lists 40 frames but only"):
        probe(path)


def test_audio_only_rejected(tmp_path: Path) -> None:
    import numpy as np

    path = tmp_path / "sound.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 8000), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate = 8000
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode())

    with pytest.raises(IngestError, match="sound.mp4: .*contains no video stream"):
        probe(path)


def test_oversized_frame_rejected(make_video: MakeVideo) -> None:
    path = make_video("wide.mp4", width=MAX_DIMENSION + 808, height=16, frames=2)

    with pytest.raises(IngestError, match="wide.mp4: frame size 9000x16 exceeds"):
        probe(path)


def test_too_many_pixels_rejected(tmp_path: Path) -> None:
    # A header is enough: 8000x6000 is 48 megapixels, within 8192 per side.
    path = write_dicom(tmp_path / "huge.dcm", frames=1, pixels=False)
    dataset = pydicom.dcmread(path)
    dataset.Rows = 6000
    dataset.Columns = 8000
    dataset.add_new("PixelData", "OB", b"\0\0")
    dataset.save_as(path)

    with pytest.raises(
        IngestError, match=r"huge.dcm: frame size 8000x6000 \(48.0 megapixels\)"
    ):
        probe(path)


def test_dicom_without_pixels_rejected(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "report.dcm", pixels=False)

    with pytest.raises(IngestError, match="report.dcm: .*no pixel data"):
        probe(path)


def test_truncated_dicom_rejected(ultrasound_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "cut.dcm"
    path.write_bytes(ultrasound_path.read_bytes()[:150_000])

    with pytest.raises(IngestError, match="cut.dcm: .*truncated"):
        probe(path)


def test_short_native_pixel_data_rejected(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "short.dcm", frames=4)
    dataset = pydicom.dcmread(path)
    dataset.NumberOfFrames = 8
    dataset.save_as(path)

    with pytest.raises(IngestError, match="short.dcm: the pixel data has 1536 bytes"):
        probe(path)


def test_missing_encapsulated_frames_rejected(
    ultrasound_path: Path, tmp_path: Path
) -> None:
    dataset = pydicom.dcmread(ultrasound_path)
    dataset.NumberOfFrames = 40
    path = tmp_path / "frames.dcm"
    dataset.save_as(path)

    with pytest.raises(IngestError, match="NumberOfFrames is 40 but"):
        probe(path)


def test_mov_named_mp4_accepted(make_video: MakeVideo) -> None:
    path = make_video("phone.mov", rotation=90)
    renamed = path.rename(path.with_name("phone.mp4"))

    result = probe(renamed)

    assert result.container == "mov"
    assert result.rotation == 90


def test_dcm_without_preamble_rejected(tmp_path: Path) -> None:
    path = tmp_path / "raw.dcm"
    path.write_bytes(b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100" + bytes(200))

    with pytest.raises(IngestError, match="raw.dcm: the file has no DICOM preamble"):
        probe(path)
