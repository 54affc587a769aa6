"""De-identify one video held in memory: analyse, mask, encode, check.

The input is decoded three times, never written to disk:

1. Analysis: faces are detected on every ``detect_every``-th frame, scaled
   down and turned to display orientation; frames are sampled for text.
2. Masking: every frame is converted to YUV 4:2:0 and the face, text and
   keep masks are applied in stored orientation. The frame is encoded with
   its original ``pts`` and time base, so frame count, timestamps (including
   a variable frame rate) and duration equal the input's.
3. Residual check: the encoded output is decoded and searched again with
   stricter thresholds; any face or text outside a mask fails the run.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import numpy as np

from enclave.deid import masking, tracking
from enclave.deid.faces import FaceDetector, detection_size
from enclave.deid.profiles import Profile
from enclave.deid.result import DeidResult
from enclave.errors import DeidentificationError, ResidualCheckFailed, ValidationError

__all__ = ["deidentify_video", "shared_face_detector"]

log = logging.getLogger(__name__)

# Share of a residual face box that must lie under a mask to count as covered.
COVERED_SHARE = 0.9
# Share of a residual text line that must lie under masks to count as covered.
TEXT_COVERED_SHARE = 0.5

_FACE_DETECTOR: FaceDetector | None = None

FORMAT_SUFFIXES = {"mp4": ".mp4", "mov": ".mov", "matroska": ".mkv"}


def shared_face_detector() -> FaceDetector:
    """Return the process-wide face detector, loading the model on first use."""
    global _FACE_DETECTOR
    if _FACE_DETECTOR is None:
        _FACE_DETECTOR = FaceDetector()
    return _FACE_DETECTOR


@dataclass
class _Analysis:
    width: int = 0
    height: int = 0
    rotation: int = 0
    time_base: Fraction = Fraction(1, 1)
    average_rate: Fraction | None = None
    codec: str = ""
    pix_fmt: str = ""
    pts: list[int] = field(default_factory=list)
    durations: list[int] = field(default_factory=list)
    detections: dict[int, np.ndarray] = field(default_factory=dict)
    text_frames: dict[int, np.ndarray] = field(default_factory=dict)
    audio_streams: int = 0
    other_streams: int = 0
    container_tags: list[str] = field(default_factory=list)
    stream_tags: list[str] = field(default_factory=list)
    chapters: int = 0

    @property
    def frame_count(self) -> int:
        return len(self.pts)

    def seconds(self, pts: int) -> float:
        return float(pts * self.time_base)

    def duration_s(self) -> float:
        if not self.pts:
            return 0.0
        return self.seconds(self.pts[-1] + self.durations[-1] - self.pts[0])


def deidentify_video(
    data: bytes, profile: Profile, *, output_format: str = "mp4"
) -> DeidResult:
    """De-identify the video ``data`` with ``profile`` and return the new file.

    Raises
    ------
    ValidationError
        If ``data`` is not a video FFmpeg can decode.
    ResidualCheckFailed
        If a face or text remains on the output; nothing is returned.
    DeidentificationError
        If a step cannot run (a detector fails, the encoder rejects a frame).
    """
    started = time.perf_counter()
    faces = profile.settings["faces"]
    detector = shared_face_detector()

    analysis = _analyse(data, profile, detector)
    text_regions = _find_text(data, analysis, profile)
    voice = _anonymised_voice(data, analysis, profile)
    rounds = 0
    while True:
        rounds += 1
        per_frame = _face_masks(analysis, faces) if profile.runs("faces") else None
        output, counts, applied = _mask_and_encode(
            data, analysis, profile, per_frame, text_regions, voice
        )
        residual = _residual_check(output, analysis, profile, detector, applied)
        if residual["passed"] or not _remask(analysis, profile, residual, rounds):
            break
    counts["faces"]["rounds"] = rounds

    report = {
        "media_type": "video",
        "steps": counts,
        "residual_check": residual,
        "input": {
            "codec": analysis.codec,
            "pix_fmt": analysis.pix_fmt,
            "width": analysis.width,
            "height": analysis.height,
            "rotation": analysis.rotation,
            "frame_count": analysis.frame_count,
            "duration_s": analysis.duration_s(),
            "audio_streams": analysis.audio_streams,
        },
        "output": residual.pop("output"),
        "elapsed_s": round(time.perf_counter() - started, 3),
    }
    residual["faces"].pop("all_boxes")
    if not residual["passed"]:
        error = ResidualCheckFailed(
            f"the residual check found {residual['faces']['hits']} face(s) and "
            f"{residual['text']['hits']} text region(s) after masking, so the output "
            "was not published; check the input or use a profile with a larger mask"
        )
        error.report = report
        raise error
    return DeidResult(
        output, report, "video", FORMAT_SUFFIXES.get(output_format, ".mp4")
    )


def _remask(
    analysis: _Analysis, profile: Profile, residual: dict[str, Any], rounds: int
) -> bool:
    """Add the residual faces to the detections for another masking round.

    Masking a face changes the detector's response next to it, so a weak face
    beside a masked one can first appear on the masked output. Such faces
    join the detections and the video is masked again, up to ``remask_rounds``
    more times; the residual check of the last round decides.
    """
    faces = profile.settings["faces"]
    if not profile.runs("faces") or rounds > int(faces["remask_rounds"]):
        return False
    if residual["text"]["hits"] or not residual["faces"]["hits"]:
        return False
    for hit in residual["faces"]["all_boxes"]:
        frame = hit["frame"]
        box = np.asarray([hit["box"]], dtype=np.float32)
        known = analysis.detections.get(frame)
        analysis.detections[frame] = (
            box if known is None else np.concatenate([known, box])
        )
    log.debug("masking again for %d residual faces", residual["faces"]["hits"])
    return True


_DONE = object()


def _prefetched(items: Iterator[Any], depth: int = 6) -> Iterator[Any]:
    """Yield from ``items`` while a background thread produces the next ``depth``.

    FFmpeg releases the GIL while it decodes, so decoding the next frames
    overlaps detection and encoding of the current one.
    """
    buffer: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer below
            failure.append(exc)
        finally:
            while not stop.is_set():
                try:
                    buffer.put(_DONE, timeout=0.1)
                    break
                except queue.Full:
                    continue

    worker = threading.Thread(target=produce, name="deid-decode", daemon=True)
    worker.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                break
            yield item
    finally:
        stop.set()
        worker.join()
    if failure:
        raise failure[0]


def _frames_for(seconds: float, rate: Fraction | None) -> int:
    """Return the frames in ``seconds`` at ``rate`` (25 fps if unknown), at least 1."""
    fps = float(rate) if rate else 25.0
    return max(1, round(seconds * fps))


def _open_input(data: bytes) -> av.container.InputContainer:
    try:
        return av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError) as exc:
        raise ValidationError(
            f"the input is not a readable video ({exc}); check the file"
        ) from exc


def _video_stream(
    container: av.container.InputContainer,
) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise ValidationError(
            "the input has no video stream; pass a video or DICOM file"
        )
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream


def _analyse(data: bytes, profile: Profile, detector: FaceDetector) -> _Analysis:
    faces = profile.settings["faces"]
    text = profile.settings.get("text", {})
    analysis = _Analysis()
    with _open_input(data) as container:
        stream = _video_stream(container)
        analysis.codec = stream.codec_context.name
        analysis.time_base = stream.time_base or Fraction(1, 90000)
        analysis.average_rate = stream.average_rate
        analysis.audio_streams = len(container.streams.audio)
        analysis.other_streams = (
            len(container.streams)
            - len(container.streams.video)
            - len(container.streams.audio)
        )
        analysis.container_tags = sorted(container.metadata)
        analysis.stream_tags = sorted(
            {k for s in container.streams for k in s.metadata}
        )
        analysis.chapters = (
            len(container.chapters()) if hasattr(container, "chapters") else 0
        )

        sample_text = profile.runs("text")
        text_every = _frames_for(text.get("sample_seconds", 4.0), stream.average_rate)
        scaled: tuple[int, int, float] | None = None
        last_frame = None
        try:
            for index, frame in enumerate(_prefetched(container.decode(stream))):
                if index == 0:
                    analysis.width, analysis.height = frame.width, frame.height
                    analysis.rotation = int(frame.rotation or 0) % 360
                    analysis.pix_fmt = frame.format.name
                    scaled = detection_size(
                        frame.width, frame.height, faces["detect_long_side"]
                    )
                _record_timing(analysis, frame, index)
                if index % faces["detect_every"] == 0 and profile.runs("faces"):
                    analysis.detections[index] = _detect(
                        detector, frame, scaled, analysis.rotation, faces["threshold"]
                    )
                if sample_text and index % text_every == 0:
                    analysis.text_frames[index] = _display_rgb(frame, analysis.rotation)
                last_frame = frame
        except av.FFmpegError as exc:
            raise ValidationError(
                f"the video cannot be decoded ({exc}); check the file"
            ) from exc
        if last_frame is None:
            raise ValidationError("the video has no frames; check the file")
        last = analysis.frame_count - 1
        if sample_text:
            analysis.text_frames.setdefault(
                last, _display_rgb(last_frame, analysis.rotation)
            )
        if (
            profile.runs("faces")
            and faces["detect_every"] > 1
            and last not in analysis.detections
        ):
            # The last frame is always examined so no track ends unseen.
            analysis.detections[last] = _detect(
                detector, last_frame, scaled, analysis.rotation, faces["threshold"]
            )
    if analysis.width % 2 or analysis.height % 2:
        # NOTE: YUV 4:2:0 output needs even sides; odd-sized sources are rare.
        raise ValidationError(
            f"frame size {analysis.width}x{analysis.height} is invalid for YUV 4:2:0 "
            "output; crop or pad the video to even width and height"
        )
    return analysis


def _record_timing(analysis: _Analysis, frame: av.VideoFrame, index: int) -> None:
    pts = frame.pts
    if pts is None:
        rate = analysis.average_rate or Fraction(25)
        pts = round(index / rate / analysis.time_base)
    if analysis.pts and pts <= analysis.pts[-1]:
        raise ValidationError(
            f"frame {index} has timestamp {pts}, not after {analysis.pts[-1]}; "
            "remux the video so that its timestamps increase"
        )
    analysis.pts.append(pts)
    duration = frame.duration or 0
    if not duration and len(analysis.pts) > 1:
        duration = analysis.pts[-1] - analysis.pts[-2]
    analysis.durations.append(int(duration))


def _display_rgb(frame: av.VideoFrame, rotation: int) -> np.ndarray:
    image = frame.to_ndarray(format="rgb24")
    return np.ascontiguousarray(masking.to_display(image, rotation))


def _detect(
    detector: FaceDetector,
    frame: av.VideoFrame,
    scaled: tuple[int, int, float] | None,
    rotation: int,
    threshold: float,
) -> np.ndarray:
    return _detect_scored(detector, frame, scaled, rotation, threshold)[0]


def _detect_scored(
    detector: FaceDetector,
    frame: av.VideoFrame,
    scaled: tuple[int, int, float] | None,
    rotation: int,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    assert scaled is not None
    width, height, scale = scaled
    small = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
    display = np.ascontiguousarray(masking.to_display(small, rotation))
    found = detector.detect(display, threshold)
    stored = masking.display_to_stored(found.boxes, rotation, width, height)
    # Scale by the exact ratio on each axis, since width and height round apart.
    ratio = np.array([frame.width / width, frame.height / height] * 2, dtype=np.float32)
    return stored * ratio, found.scores


def _confirmed_faces(
    candidates: list[tuple[int, int, np.ndarray, float, float]],
    faces: dict[str, Any],
    every: int,
) -> list[dict[str, Any]]:
    """Keep the uncovered residual detections that count as a face.

    A detection at or above the masking threshold always counts. A weaker one
    (between the residual and the masking threshold) counts only when an
    overlapping uncovered detection is also found on a neighbouring checked
    frame. The detector's weak responses on non-faces flicker from frame to
    frame, while a face that the masks missed stays.
    """
    hits = []
    for position, source_index, box, score, share in candidates:
        confirmed = score >= faces["threshold"] or any(
            0 < abs(other[0] - position) <= 2 * every
            and tracking.iou(box, other[2]) > 0.3
            for other in candidates
        )
        if confirmed:
            hits.append(
                {
                    "frame": source_index,
                    "box": [round(float(v)) for v in box],
                    "score": round(score, 3),
                    "covered": round(share, 3),
                }
            )
    return hits


def _face_masks(analysis: _Analysis, faces: dict[str, Any]) -> list[list[masking.Box]]:
    hold = int(faces["hold_frames"])
    tracks = tracking.link_tracks(analysis.detections, hold)
    boxes = tracking.mask_boxes(tracks, analysis.frame_count, hold)
    scale = float(faces["box_scale"])
    return [
        [
            tracking.grow_box(box, scale, analysis.width, analysis.height)
            for box in frame_boxes
        ]
        for frame_boxes in boxes
    ]


def _find_text(data: bytes, analysis: _Analysis, profile: Profile) -> list[Any]:
    if not profile.runs("text"):
        return []
    from enclave.deid import text as text_module

    settings = profile.settings["text"]
    frames = _FrameSequence(data, analysis)
    detector = text_module.default_detector(float(settings["threshold"]))
    return text_module.find_static_text(
        frames,
        sample_every=_frames_for(settings["sample_seconds"], analysis.average_rate),
        detector=detector,
    )


class _FrameSequence:
    """Display-oriented RGB frames by index, cached when sampled, else decoded again.

    The text search reads the frames of a gap between two samples one by one,
    from either end. A miss seeks to the keyframe before the frame and decodes
    forward, keeping the last ``window`` decoded frames, so the next frames of
    the same gap come from memory.
    """

    def __init__(self, data: bytes, analysis: _Analysis, window: int = 48) -> None:
        self._data = data
        self._analysis = analysis
        self._index_of_pts = {pts: i for i, pts in enumerate(analysis.pts)}
        self._window = window
        self._recent: dict[int, av.VideoFrame] = {}

    def __len__(self) -> int:
        return self._analysis.frame_count

    def __getitem__(self, index: int) -> np.ndarray:
        cached = self._analysis.text_frames.get(index)
        if cached is not None:
            return cached
        if index not in self._recent:
            self._decode_up_to(index)
        return _display_rgb(self._recent[index], self._analysis.rotation)

    def _decode_up_to(self, index: int) -> None:
        target = self._analysis.pts[index]
        recent: dict[int, av.VideoFrame] = {}
        with _open_input(self._data) as container:
            stream = _video_stream(container)
            container.seek(target, stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                position = self._index_of_pts.get(frame.pts)
                if position is None:
                    continue
                recent[position] = frame
                if len(recent) > self._window:
                    del recent[min(recent)]
                if position >= index:
                    break
        if index not in recent:
            raise DeidentificationError(f"frame {index} could not be decoded again")
        self._recent = recent


def _text_boxes_stored(
    regions: list[Any], analysis: _Analysis
) -> list[tuple[Any, masking.Box]]:
    display_w, display_h = analysis.width, analysis.height
    if analysis.rotation in (90, 270):
        display_w, display_h = display_h, display_w
    result = []
    for region in regions:
        stored = masking.display_to_stored(
            np.array([region.box], dtype=np.float32),
            analysis.rotation,
            analysis.width,
            analysis.height,
        )[0]
        box = tuple(int(round(v)) for v in stored)
        result.append((region, box))
    return result


def _keep_regions_stored(profile: Profile, analysis: _Analysis) -> list[masking.Box]:
    regions = profile.step("keep").get("regions", [])
    boxes = []
    for x, y, w, h in regions:
        stored = masking.display_to_stored(
            np.array([[x, y, x + w, y + h]], dtype=np.float32),
            analysis.rotation,
            analysis.width,
            analysis.height,
        )[0]
        x1, y1, x2, y2 = (int(round(v)) for v in stored)
        boxes.append(
            (max(0, x1), max(0, y1), min(analysis.width, x2), min(analysis.height, y2))
        )
    return boxes


def _kept(profile: Profile, seconds: float) -> bool:
    ranges = profile.step("keep").get("ranges", [])
    return not ranges or any(start <= seconds < end for start, end in ranges)


def _anonymised_voice(
    data: bytes, analysis: _Analysis, profile: Profile
) -> _Voice | None:
    """Decode the first audio stream and anonymise it, when the profile keeps audio."""
    audio = profile.settings["audio"]
    if audio["mode"] == "remove" or not analysis.audio_streams:
        return None
    if audio["mode"] != "mcadams":
        raise ValidationError(
            f"audio mode {audio['mode']!r} is invalid; use 'remove' or 'mcadams'"
        )
    from enclave.deid.audio import mcadams

    chunks = []
    with _open_input(data) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate or 16000
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        start = None
        for frame in container.decode(stream):
            if start is None and frame.pts is not None:
                start = float(frame.pts * frame.time_base)
            for converted in resampler.resample(frame):
                chunks.append(converted.to_ndarray().reshape(-1))
        for converted in resampler.resample(None):
            chunks.append(converted.to_ndarray().reshape(-1))
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    start = start or 0.0
    samples = _mute_outside_ranges(samples, rate, start, profile)
    anonymised = mcadams(
        samples,
        rate,
        alpha=float(audio["mcadams_alpha"]),
        frame_ms=float(audio["frame_ms"]),
        order=int(audio["lpc_order"]),
    )
    return _Voice(anonymised, rate, start)


def _mute_outside_ranges(
    samples: np.ndarray, rate: int, start: float, profile: Profile
) -> np.ndarray:
    ranges = profile.step("keep").get("ranges", [])
    if not ranges:
        return samples
    times = start + np.arange(len(samples)) / rate
    keep = np.zeros(len(samples), dtype=bool)
    for begin, end in ranges:
        keep |= (times >= begin) & (times < end)
    return np.where(keep, samples, 0.0).astype(np.float32)


@dataclass(frozen=True)
class _Voice:
    samples: np.ndarray
    rate: int
    start_s: float


def _add_voice(output: Any, voice: _Voice) -> Any:
    stream = output.add_stream("aac", rate=voice.rate)
    stream.layout = "mono"
    return stream


def _encode_voice(output: Any, stream: Any, voice: _Voice) -> None:
    block = 1024
    offset = round(voice.start_s * voice.rate)
    for start in range(0, len(voice.samples), block):
        chunk = np.ascontiguousarray(voice.samples[start : start + block])
        frame = av.AudioFrame.from_ndarray(
            chunk[np.newaxis, :], format="flt", layout="mono"
        )
        frame.sample_rate = voice.rate
        frame.time_base = Fraction(1, voice.rate)
        frame.pts = offset + start
        for packet in stream.encode(frame):
            output.mux(packet)
    for packet in stream.encode():
        output.mux(packet)


def _mask_and_encode(
    data: bytes,
    analysis: _Analysis,
    profile: Profile,
    face_masks: list[list[masking.Box]] | None,
    text_regions: list[Any],
    voice: _Voice | None = None,
) -> tuple[bytes, dict[str, Any], dict[int, list[masking.Box]]]:
    faces = profile.settings["faces"]
    encode = profile.settings["encode"]
    text_boxes = _text_boxes_stored(text_regions, analysis)
    keep_boxes = _keep_regions_stored(profile, analysis)
    pixelate = faces.get("fill") == "pixelate"

    counts: dict[str, Any] = {
        "faces": {
            "detector_frames": len(analysis.detections),
            "detections": int(sum(len(b) for b in analysis.detections.values())),
            "masks_applied": 0,
            "frames_with_masks": 0,
            "mask_pixels": 0,
        },
        "text": {
            "regions": len(text_regions),
            "masks_applied": 0,
            "frames_with_masks": 0,
        },
        "keep": {"frames_cut": 0, "regions": len(keep_boxes)},
        "audio": {"streams_removed": analysis.audio_streams, "mode": "remove"},
        "metadata": {
            "container_tags_removed": analysis.container_tags,
            "stream_tags_removed": analysis.stream_tags,
            "chapters_removed": analysis.chapters,
            "other_streams_removed": analysis.other_streams,
        },
    }
    applied: dict[int, list[masking.Box]] = {}

    buffer = io.BytesIO()
    # bitexact keeps the muxer from writing its own "encoder" tag.
    output = av.open(buffer, mode="w", format="mp4", options={"fflags": "+bitexact"})
    ostream = output.add_stream(
        encode["codec"],
        rate=analysis.average_rate or None,
        options={"crf": str(encode["crf"]), "preset": str(encode["preset"])},
    )
    ostream.width, ostream.height = analysis.width, analysis.height
    ostream.pix_fmt = encode["pix_fmt"]
    ostream.time_base = analysis.time_base
    ostream.codec_context.time_base = analysis.time_base
    if analysis.rotation:
        ostream.set_display_rotation(analysis.rotation)
    voice_stream = _add_voice(output, voice) if voice is not None else None
    if voice is not None:
        counts["audio"] = {
            "mode": "mcadams",
            "streams_removed": analysis.audio_streams - 1,
            "streams_anonymised": 1,
            "sample_rate": voice.rate,
            "seconds": round(len(voice.samples) / voice.rate, 3),
        }

    try:
        with _open_input(data) as container:
            stream = _video_stream(container)
            for index, frame in enumerate(_prefetched(container.decode(stream))):
                pts = analysis.pts[index]
                if not _kept(profile, analysis.seconds(pts)):
                    counts["keep"]["frames_cut"] += 1
                    continue
                image = frame.to_ndarray(format="yuv420p")
                planes = _planes(image, analysis.width, analysis.height)
                boxes = face_masks[index] if face_masks else []
                for box in boxes:
                    if pixelate:
                        masking.pixelate_box(planes, box, int(faces["pixel_blocks"]))
                    else:
                        masking.fill_box(planes, box)
                text_here = [box for region, box in text_boxes if region.covers(index)]
                for box in text_here:
                    masking.fill_box(planes, box)
                if keep_boxes:
                    masking.keep_only(planes, keep_boxes)
                applied[index] = boxes + text_here
                _count_masks(counts, boxes, text_here)

                out_frame = av.VideoFrame.from_ndarray(image, format="yuv420p")
                out_frame.pts = pts
                out_frame.time_base = analysis.time_base
                out_frame.duration = analysis.durations[index]
                for packet in ostream.encode(out_frame):
                    output.mux(packet)
            for packet in ostream.encode():
                output.mux(packet)
        if voice_stream is not None and voice is not None:
            _encode_voice(output, voice_stream, voice)
        output.close()
    except av.FFmpegError as exc:
        raise DeidentificationError(
            f"encoding the de-identified video failed: {exc}"
        ) from exc
    return buffer.getvalue(), counts, applied


def _planes(image: np.ndarray, width: int, height: int) -> list[np.ndarray]:
    luma = image[:height]
    chroma_rows = height // 4
    u = image[height : height + chroma_rows].reshape(height // 2, width // 2)
    v = image[height + chroma_rows :].reshape(height // 2, width // 2)
    return [luma, u, v]


def _count_masks(
    counts: dict[str, Any], faces: list[masking.Box], text: list[masking.Box]
) -> None:
    counts["faces"]["masks_applied"] += len(faces)
    counts["faces"]["mask_pixels"] += sum(
        (x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in faces
    )
    counts["faces"]["frames_with_masks"] += bool(faces)
    counts["text"]["masks_applied"] += len(text)
    counts["text"]["frames_with_masks"] += bool(text)


def _covered_share(box: np.ndarray, masks: list[masking.Box]) -> float:
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    if x2 <= x1 or y2 <= y1:
        return 1.0
    cover = np.zeros((y2 - y1, x2 - x1), dtype=bool)
    for mx1, my1, mx2, my2 in masks:
        cover[
            max(0, my1 - y1) : max(0, my2 - y1), max(0, mx1 - x1) : max(0, mx2 - x1)
        ] = True
    return float(cover.mean())


def _residual_check(
    output: bytes,
    analysis: _Analysis,
    profile: Profile,
    detector: FaceDetector,
    applied: dict[int, list[masking.Box]],
) -> dict[str, Any]:
    faces = profile.settings["faces"]
    text = profile.settings.get("text", {})
    every = int(faces["residual_every"])
    # Check the frames between detector runs, where tracking did the work.
    phase = 1 % every if faces["detect_every"] > 1 else 0
    index_of_pts = {pts: i for i, pts in enumerate(analysis.pts)}
    text_every = _frames_for(text.get("residual_seconds", 4.0), analysis.average_rate)
    text_frames: dict[int, np.ndarray] = {}
    # The check runs even when masking is switched off, so that switching it
    # off cannot publish text.
    check_text = "text" in profile.steps

    candidates: list[tuple[int, int, np.ndarray, float, float]] = []
    checked = 0
    out_pts: list[int] = []
    out_durations: list[int] = []
    sources: list[int] = []
    with _open_input(output) as container:
        stream = _video_stream(container)
        out_time_base = stream.time_base
        scaled = None
        last_frame = None
        for position, frame in enumerate(_prefetched(container.decode(stream))):
            if scaled is None:
                scaled = detection_size(
                    frame.width, frame.height, faces["detect_long_side"]
                )
            out_pts.append(frame.pts)
            out_durations.append(frame.duration or 0)
            source_index = index_of_pts.get(
                round(Fraction(frame.pts) * out_time_base / analysis.time_base)
            )
            if source_index is None:
                raise DeidentificationError(
                    f"output frame {position} has a timestamp the input does not have"
                )
            if position % every == phase or position == 0:
                checked += 1
                found = _detect_scored(
                    detector,
                    frame,
                    scaled,
                    analysis.rotation,
                    faces["residual_threshold"],
                )
                for box, score in zip(*found, strict=True):
                    share = _covered_share(box, applied.get(source_index, []))
                    if share < COVERED_SHARE:
                        candidates.append(
                            (position, source_index, box, float(score), share)
                        )
            sources.append(source_index)
            if check_text and position % text_every == 0:
                text_frames[position] = _display_rgb(frame, analysis.rotation)
            last_frame = frame
        if last_frame is not None and check_text:
            text_frames.setdefault(
                position, _display_rgb(last_frame, analysis.rotation)
            )

    face_hits = _confirmed_faces(candidates, faces, every)
    text_result = (
        _residual_text(text_frames, len(out_pts), text, analysis, sources, applied)
        if check_text
        else {
            "checked_frames": 0,
            "hits": 0,
            "boxes": [],
        }
    )
    first = Fraction(out_pts[0]) * out_time_base if out_pts else Fraction(0)
    last = (
        Fraction(out_pts[-1] + out_durations[-1]) * out_time_base
        if out_pts
        else Fraction(0)
    )
    return {
        "passed": not face_hits and not text_result["hits"],
        "faces": {
            "threshold": faces["residual_threshold"],
            "checked_frames": checked,
            "hits": len(face_hits),
            "boxes": face_hits[:50],
            "all_boxes": face_hits,
        },
        "text": text_result,
        "output": {
            "frame_count": len(out_pts),
            "duration_s": float(last - first),
            "time_base": str(out_time_base),
        },
    }


class _SparseFrames:
    def __init__(self, frames: dict[int, np.ndarray], count: int) -> None:
        self._frames = frames
        self._count = count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> np.ndarray:
        try:
            return self._frames[index]
        except KeyError:
            raise DeidentificationError(
                f"residual text check asked for unsampled frame {index}"
            ) from None


def _residual_text(
    frames: dict[int, np.ndarray],
    count: int,
    settings: dict[str, Any],
    analysis: _Analysis,
    sources: list[int],
    applied: dict[int, list[masking.Box]],
) -> dict[str, Any]:
    from enclave.deid import text as text_module

    found = text_module.residual_text(
        _SparseFrames(frames, count),
        float(settings["residual_threshold"]),
        sample_every=_frames_for(settings["residual_seconds"], analysis.average_rate),
    )
    # OCR reads the hard edge between a black mask and a bright background as
    # a text line. A line that lies mostly under masks shows nothing, so it is
    # not a residual; one mostly outside the masks is.
    hits = []
    for hit in found:
        source_index = sources[hit.frame_index]
        stored = masking.display_to_stored(
            np.array([hit.box], dtype=np.float32),
            analysis.rotation,
            analysis.width,
            analysis.height,
        )[0]
        share = _covered_share(stored, applied.get(source_index, []))
        if share < TEXT_COVERED_SHARE:
            hits.append(
                {
                    "frame": source_index,
                    "box": list(hit.box),
                    "covered": round(share, 3),
                }
            )
    return {
        "threshold": settings["residual_threshold"],
        "checked_frames": len(frames),
        "hits": len(hits),
        "boxes": hits[:50],
        "on_masks": len(found) - len(hits),
    }
