"""De-identify one video held in memory: analyse, mask, encode, check.

The input is decoded twice and the output once, never written to disk:

1. Analysis: faces are detected on every ``detect_every``-th frame, scaled
   down and turned to display orientation; frames are sampled for text.
2. Masking: every frame is converted to YUV 4:2:0 and the face, text and
   keep masks are applied in stored orientation. The frame is encoded with
   its original ``pts`` and time base, so frame count, timestamps (including
   a variable frame rate) and duration equal the input's.
3. Residual check: each packet the encoder returns is decoded before it is
   muxed, and the decoded frames are searched again with stricter
   thresholds. Any face or text outside a mask fails the run.

Face detection runs in a pool of worker threads, one per core, while the
calling thread decodes, masks and encodes, so the residual check of a frame
overlaps the encoding of the next ones.
"""

from __future__ import annotations

import collections
import functools
import io
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

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

# Frames waiting for or in face detection, per worker. Each job keeps a
# decoded frame (1.4 MB at 720p) in memory, and a few per worker keep the
# workers busy while the calling thread masks and encodes.
FRAMES_IN_FLIGHT_PER_WORKER = 4

FORMAT_SUFFIXES = {"mp4": ".mp4", "mov": ".mov", "matroska": ".mkv"}


_FACE_DETECTOR: FaceDetector | None = None
_FACE_DETECTOR_LOCK = threading.Lock()

# Intra-op threads of the OCR engine. OCR runs in its own thread beside the
# face detection threads, so one thread per call is enough. More threads
# would also spin while idle, because RapidOCR leaves onnxruntime's spinning
# on, and take CPU time from face detection.
OCR_THREADS = 1


def shared_face_detector() -> FaceDetector:
    """Return the process-wide face detector, loading the model on first use.

    Its onnxruntime session runs each frame on one thread, and the detection
    pool runs one frame per core at once. On the 2-core AMD EPYC of
    docs/benchmarks.md, two such threads took 8.4 ms per 512x288 frame, and
    one caller with two intra-op threads 11.0 ms.
    """
    global _FACE_DETECTOR
    with _FACE_DETECTOR_LOCK:
        if _FACE_DETECTOR is None:
            _FACE_DETECTOR = FaceDetector(threads=1)
        return _FACE_DETECTOR


@functools.cache
def detection_workers() -> int:
    """Return the number of face detection threads: the cores this process may use."""
    return len(os.sched_getaffinity(0))


@functools.cache
def detection_pool() -> ThreadPoolExecutor:
    """Return the process-wide pool of face detection threads."""
    return ThreadPoolExecutor(
        max_workers=detection_workers(), thread_name_prefix="deid-faces"
    )


class _DetectionJobs:
    """Face detections running in the detection pool, collected in submission order.

    At most ``limit`` frames are in flight. ``submit`` waits for the oldest
    detection beyond that, which bounds the memory of decoded frames and
    slows the calling thread down to the pool's pace. With ``concurrency``,
    at most that many detections run at once, which leaves the other cores
    to work that is more urgent.
    """

    def __init__(
        self, pool: ThreadPoolExecutor, limit: int, concurrency: int | None = None
    ) -> None:
        self._pool = pool
        self._limit = max(1, limit)
        self._slots: threading.BoundedSemaphore | None = None
        if concurrency is not None:
            self._slots = threading.BoundedSemaphore(max(1, concurrency))
        self._pending: collections.deque[tuple[Any, Future[Any]]] = (
            collections.deque()
        )
        self._done: list[tuple[Any, Any]] = []

    def submit(self, key: Any, function: Callable[..., Any], *args: Any) -> None:
        if self._slots is not None:
            future = self._pool.submit(_run_in_slot, self._slots, function, *args)
        else:
            future = self._pool.submit(function, *args)
        self._pending.append((key, future))
        while len(self._pending) > self._limit:
            self._collect_oldest()

    def finish(self) -> list[tuple[Any, Any]]:
        """Wait for every detection and return ``(key, result)`` pairs in order."""
        while self._pending:
            self._collect_oldest()
        return self._done

    def cancel(self) -> None:
        """Cancel the detections not yet started. Running ones finish unread."""
        for _, future in self._pending:
            future.cancel()
        self._pending.clear()

    def _collect_oldest(self) -> None:
        key, future = self._pending.popleft()
        self._done.append((key, future.result()))


def _run_in_slot(
    slots: threading.BoundedSemaphore, function: Callable[..., Any], *args: Any
) -> Any:
    with slots:
        return function(*args)


@functools.cache
def text_pool() -> ThreadPoolExecutor:
    """Return the process-wide thread that runs OCR beside face detection.

    One thread keeps the OCR engine's Python parts, which RapidOCR does not
    document as thread-safe, to one caller at a time.
    """
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="deid-text")


def _forget_pools() -> None:
    # A forked child has none of the parent's threads, so it starts new pools.
    detection_pool.cache_clear()
    text_pool.cache_clear()


os.register_at_fork(after_in_child=_forget_pools)


_TEXT_DETECTOR_LOCK = threading.Lock()


def _text_detector(threshold: float) -> Any:
    from enclave.deid import text as text_module

    # The lock keeps the OCR thread and this one from loading it twice.
    with _TEXT_DETECTOR_LOCK:
        return text_module.default_detector(threshold, threads=OCR_THREADS)


def _detection_jobs(concurrency: int | None = None) -> _DetectionJobs:
    return _DetectionJobs(
        detection_pool(),
        FRAMES_IN_FLIGHT_PER_WORKER * detection_workers(),
        concurrency,
    )


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
    for name in ("residual_every", "detect_every"):
        if int(faces[name]) < 1:
            raise ValidationError(
                f"faces_{name} {faces[name]!r} is invalid; use 1 for every frame, "
                "or a larger interval"
            )
    # The models load in the worker threads while the calling thread starts
    # decoding, and the first detection waits for them.
    detection_pool().submit(shared_face_detector)
    if "text" in profile.steps:
        text_pool().submit(_text_detector, float(profile.settings["text"]["threshold"]))

    analysis, text_samples = _analyse(data, profile)
    if not any(_kept(profile, analysis.seconds(pts)) for pts in analysis.pts):
        ranges = profile.step("keep").get("ranges", [])
        raise ValidationError(
            f"keep ranges {ranges} select no frame of the video, which runs from "
            f"{analysis.seconds(analysis.pts[0]):.3f} s for "
            f"{analysis.duration_s():.3f} s; give ranges in seconds inside it"
        )
    text_regions = _find_text(data, analysis, profile, text_samples)
    voice = _anonymised_voice(data, analysis, profile)
    rounds = 0
    while True:
        rounds += 1
        per_frame = _face_masks(analysis, faces) if profile.runs("faces") else None
        output, counts, residual = _mask_encode_and_check(
            data, analysis, profile, per_frame, text_regions, voice
        )
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


def _analyse(
    data: bytes, profile: Profile
) -> tuple[_Analysis, dict[int, Future[Any]]]:
    """Decode the input once: record timing, detect faces and scan text samples.

    Returns the analysis and the text scans of the sampled frames, which run
    in the OCR thread.
    """
    faces = profile.settings["faces"]
    text = profile.settings.get("text", {})
    analysis = _Analysis()
    text_samples: dict[int, Future[Any]] = {}
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
        detect_faces = profile.runs("faces")
        text_every = _frames_for(text.get("sample_seconds", 4.0), stream.average_rate)
        threshold = faces["threshold"]
        text_threshold = float(text.get("threshold", 0.5))
        scaled: tuple[int, int, float] | None = None
        last_frame = None
        # The OCR scans of the sampled frames must finish before masking can
        # start, and each takes as long as dozens of face detections. Face
        # detection leaves them a core, so that they do not trail behind
        # once decoding ends.
        workers = detection_workers()
        jobs = _detection_jobs(
            workers - 1 if sample_text and workers > 1 else None
        )
        completed = False

        def sample_text_of(index: int, frame: av.VideoFrame) -> None:
            # Only the scan's result is kept, so memory does not grow with
            # the video's length.
            image = _display_rgb(frame, analysis.rotation)
            text_samples[index] = text_pool().submit(
                _scan_text, image, text_threshold
            )

        def detect_faces_of(index: int, frame: av.VideoFrame) -> None:
            jobs.submit(index, _detect, frame, scaled, analysis.rotation, threshold)

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
                # The text sample is converted before the frame goes to a
                # detection thread, because both conversions use the frame.
                if sample_text and index % text_every == 0:
                    sample_text_of(index, frame)
                if detect_faces and index % faces["detect_every"] == 0:
                    detect_faces_of(index, frame)
                last_frame = frame
            if last_frame is None:
                raise ValidationError("the video has no frames; check the file")
            last = analysis.frame_count - 1
            if sample_text and last not in text_samples:
                sample_text_of(last, last_frame)
            if detect_faces and last % faces["detect_every"] != 0:
                # The last frame is always examined so no track ends unseen.
                detect_faces_of(last, last_frame)
            analysis.detections = dict(jobs.finish())
            completed = True
        except av.FFmpegError as exc:
            raise ValidationError(
                f"the video cannot be decoded ({exc}); check the file"
            ) from exc
        finally:
            jobs.cancel()
            if not completed:
                for future in text_samples.values():
                    future.cancel()
    if analysis.width % 2 or analysis.height % 2:
        # NOTE: YUV 4:2:0 output needs even sides; odd-sized sources are rare.
        raise ValidationError(
            f"frame size {analysis.width}x{analysis.height} is invalid for YUV 4:2:0 "
            "output; crop or pad the video to even width and height"
        )
    return analysis, text_samples


def _scan_text(image: np.ndarray, threshold: float) -> Any:
    return _text_detector(threshold).detect(image)


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
    frame: av.VideoFrame,
    scaled: tuple[int, int, float] | None,
    rotation: int,
    threshold: float,
) -> np.ndarray:
    return _detect_scored(frame, scaled, rotation, threshold)[0]


_THREAD_STATE = threading.local()


def _reformatter() -> VideoReformatter:
    """Return this thread's scaler, so its swscale context is set up only once."""
    reformatter = getattr(_THREAD_STATE, "reformatter", None)
    if reformatter is None:
        reformatter = _THREAD_STATE.reformatter = VideoReformatter()
    return reformatter


def _detect_scored(
    frame: av.VideoFrame,
    scaled: tuple[int, int, float] | None,
    rotation: int,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Detect faces on ``frame`` scaled to ``scaled``, with boxes in stored pixels.

    Runs in the detection threads. The scaler runs single-threaded because
    every core already runs a detection thread.
    """
    assert scaled is not None
    width, height, scale = scaled
    small = (
        _reformatter()
        .reformat(
            frame,
            width=width,
            height=height,
            format="rgb24",
            interpolation="BILINEAR",
            threads=1,
        )
        .to_ndarray()
    )
    display = np.ascontiguousarray(masking.to_display(small, rotation))
    found = shared_face_detector().detect(display, threshold)
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


def _find_text(
    data: bytes,
    analysis: _Analysis,
    profile: Profile,
    text_samples: dict[int, Future[Any]],
) -> list[Any]:
    if not profile.runs("text"):
        return []
    from enclave.deid import text as text_module

    settings = profile.settings["text"]
    sample_hits = {index: future.result() for index, future in text_samples.items()}
    frames = _FrameSequence(data, analysis)
    # The OCR thread is idle now, so this thread may use the engine: the
    # search between samples runs here.
    return text_module.find_static_text(
        frames,
        sample_every=_frames_for(settings["sample_seconds"], analysis.average_rate),
        detector=_text_detector(float(settings["threshold"])),
        sample_hits=sample_hits,
    )


class _FrameSequence:
    """Display-oriented RGB frames by index, decoded again from the input.

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


def _mask_encode_and_check(
    data: bytes,
    analysis: _Analysis,
    profile: Profile,
    face_masks: list[list[masking.Box]] | None,
    text_regions: list[Any],
    voice: _Voice | None = None,
) -> tuple[bytes, dict[str, Any], dict[str, Any]]:
    """Mask and encode every kept frame, checking the encoded output as it is made.

    Returns the output file, the per-step counts and the residual check.
    """
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
    kept_indices: list[int] = []

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

    check = _ResidualCheck(analysis, profile, applied)
    try:
        with _open_input(data) as container:
            stream = _video_stream(container)
            for index, frame in enumerate(_prefetched(container.decode(stream))):
                pts = analysis.pts[index]
                if not _kept(profile, analysis.seconds(pts)):
                    counts["keep"]["frames_cut"] += 1
                    continue
                kept_indices.append(index)
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
                    # The muxer takes the packet's data, so it is decoded first.
                    check.decode(packet, ostream.codec_context)
                    output.mux(packet)
            for packet in ostream.encode():
                check.decode(packet, ostream.codec_context)
                output.mux(packet)
            check.decode(None, ostream.codec_context)
        if voice_stream is not None and voice is not None:
            _encode_voice(output, voice_stream, voice)
        output.close()
        residual = check.finish(kept_indices)
    except av.FFmpegError as exc:
        raise DeidentificationError(
            f"encoding the de-identified video failed: {exc}"
        ) from exc
    finally:
        check.cancel()
    data_out = buffer.getvalue()
    residual["output"] = _output_facts(data_out, analysis, kept_indices)
    return data_out, counts, residual


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


class _ResidualCheck:
    """The stricter search of the encoded output for faces and text outside masks.

    ``decode`` takes each packet the encoder returns, before it is muxed, so
    the check reads the exact bits of the output file. Face detection of the
    decoded frames runs in the detection pool, and OCR of the sampled frames
    in the OCR thread, while the calling thread masks and encodes the next
    frames.
    """

    def __init__(
        self,
        analysis: _Analysis,
        profile: Profile,
        applied: dict[int, list[masking.Box]],
    ) -> None:
        self._analysis = analysis
        self._faces = profile.settings["faces"]
        self._text = profile.settings.get("text", {})
        self._applied = applied
        self.every = int(self._faces["residual_every"])
        # With a larger interval, check the frames between detector runs,
        # where tracking did the work.
        self._phase = 1 % self.every if self._faces["detect_every"] > 1 else 0
        self._index_of_pts = {pts: i for i, pts in enumerate(analysis.pts)}
        self._text_every = _frames_for(
            self._text.get("residual_seconds", 4.0), analysis.average_rate
        )
        # The check runs even when masking is switched off, so that switching
        # it off cannot publish text.
        self._check_text = "text" in profile.steps
        self._text_threshold = float(self._text.get("residual_threshold", 0.3))
        self._text_scans: dict[int, Future[Any]] = {}
        self._sources: list[int] = []
        self._scaled: tuple[int, int, float] | None = None
        self._decoder: av.CodecContext | None = None
        self._last_frame: av.VideoFrame | None = None
        self._checked = 0
        self._jobs = _detection_jobs()

    def decode(
        self, packet: av.Packet | None, encoder: av.CodecContext
    ) -> None:
        """Decode one output packet (``None`` flushes) and queue its frames."""
        if self._decoder is None:
            # The encoder has been opened by now, so its extradata (the H.264
            # parameter sets that MP4 keeps out of band) is final.
            self._decoder = av.CodecContext.create(encoder.codec.canonical_name, "r")
            self._decoder.extradata = encoder.extradata
        for frame in self._decoder.decode(packet):
            self._add(frame)

    def _add(self, frame: av.VideoFrame) -> None:
        position = len(self._sources)
        source_index = self._index_of_pts.get(frame.pts)
        if source_index is None:
            raise DeidentificationError(
                f"output frame {position} has timestamp {frame.pts}, "
                "which no input frame has"
            )
        self._sources.append(source_index)
        if self._scaled is None:
            self._scaled = detection_size(
                frame.width, frame.height, self._faces["detect_long_side"]
            )
        # The text sample is converted before the frame goes to a detection
        # thread, because both conversions use the frame.
        if self._check_text and position % self._text_every == 0:
            self._scan_text(position, frame)
        if position % self.every == self._phase or position == 0:
            self._checked += 1
            self._jobs.submit(
                (position, source_index),
                _detect_scored,
                frame,
                self._scaled,
                self._analysis.rotation,
                self._faces["residual_threshold"],
            )
        self._last_frame = frame

    def _scan_text(self, position: int, frame: av.VideoFrame) -> None:
        image = _display_rgb(frame, self._analysis.rotation)
        self._text_scans[position] = text_pool().submit(
            _scan_residual_text, image, self._text_threshold
        )

    def finish(self, kept_indices: list[int]) -> dict[str, Any]:
        """Wait for the detections and return the check's result.

        Raises
        ------
        DeidentificationError
            If the decoded output frames are not the kept input frames.
        """
        if self._sources != kept_indices:
            raise DeidentificationError(
                f"the encoded output decodes to {len(self._sources)} frames, "
                f"expected the {len(kept_indices)} kept input frames in order"
            )
        last = len(self._sources) - 1
        last_unscanned = last not in self._text_scans
        if self._check_text and self._last_frame is not None and last_unscanned:
            self._scan_text(last, self._last_frame)
        self._last_frame = None

        candidates: list[tuple[int, int, np.ndarray, float, float]] = []
        for (position, source_index), found in self._jobs.finish():
            masks = self._applied.get(source_index, [])
            for box, score in zip(*found, strict=True):
                share = _covered_share(box, masks)
                if share < COVERED_SHARE:
                    candidates.append(
                        (position, source_index, box, float(score), share)
                    )
        face_hits = _confirmed_faces(candidates, self._faces, self.every)
        if self._check_text:
            text_result = _residual_text(
                {p: future.result() for p, future in self._text_scans.items()},
                self._text_threshold,
                self._analysis,
                self._sources,
                self._applied,
            )
        else:
            text_result = {"checked_frames": 0, "hits": 0, "boxes": []}
        return {
            "passed": not face_hits and not text_result["hits"],
            "faces": {
                "threshold": self._faces["residual_threshold"],
                "checked_frames": self._checked,
                "hits": len(face_hits),
                "boxes": face_hits[:50],
                "all_boxes": face_hits,
            },
            "text": text_result,
        }

    def cancel(self) -> None:
        self._jobs.cancel()
        for future in self._text_scans.values():
            future.cancel()


def _scan_residual_text(image: np.ndarray, threshold: float) -> list[Any]:
    from enclave.deid import text as text_module

    # One detection pass decides whether a frame is clean.
    return text_module.residual_text(
        [image], threshold, detector=_text_detector(threshold)
    )


def _output_facts(
    output: bytes, analysis: _Analysis, kept_indices: list[int]
) -> dict[str, Any]:
    """Read the frame count, duration and time base of the written file.

    The packets are demuxed, not decoded. Their timestamps must be those of
    the kept input frames, so that the muxer's edits (such as an edit list)
    cannot shift the frames that the residual check examined.

    Raises
    ------
    DeidentificationError
        If the file's timestamps differ from the kept input frames'.
    """
    with _open_input(output) as container:
        stream = container.streams.video[0]
        time_base = stream.time_base
        timing = sorted(
            (packet.pts, packet.duration or 0)
            for packet in container.demux(stream)
            if packet.size and packet.pts is not None
        )
    expected = [analysis.pts[i] for i in kept_indices]
    found = [
        round(Fraction(pts) * time_base / analysis.time_base) for pts, _ in timing
    ]
    if found != expected:
        raise DeidentificationError(
            f"the output file has {len(found)} frames whose timestamps differ from "
            f"the {len(expected)} kept input frames'; the output was not published"
        )
    if not timing:
        return {"frame_count": 0, "duration_s": 0.0, "time_base": str(time_base)}
    first = Fraction(timing[0][0]) * time_base
    last = Fraction(timing[-1][0] + timing[-1][1]) * time_base
    return {
        "frame_count": len(timing),
        "duration_s": float(last - first),
        "time_base": str(time_base),
    }


def _residual_text(
    scans: dict[int, list[Any]],
    threshold: float,
    analysis: _Analysis,
    sources: list[int],
    applied: dict[int, list[masking.Box]],
) -> dict[str, Any]:
    """Turn the OCR hits on sampled output frames (by position) into the result."""
    found = [(position, hit) for position, hits in scans.items() for hit in hits]
    # OCR reads the hard edge between a black mask and a bright background as
    # a text line. A line that lies mostly under masks shows nothing, so it is
    # not a residual; one mostly outside the masks is.
    hits = []
    for position, hit in found:
        source_index = sources[position]
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
        "threshold": threshold,
        "checked_frames": len(scans),
        "hits": len(hits),
        "boxes": hits[:50],
        "on_masks": len(found) - len(hits),
    }
