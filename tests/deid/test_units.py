"""Pure helpers of the video pipeline: tracking, masks, orientation, profiles, audio."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from enclave.deid import masking, tracking
from enclave.deid.audio import lpc, mcadams
from enclave.deid.faces import (
    _dynamic_model_bytes,
    centerface_path,
    detection_size,
    nms,
    padded,
)
from enclave.deid.profiles import PROFILE_NAMES, load_profile
from enclave.deid.video import _DetectionJobs
from enclave.errors import DeidentificationError, ValidationError
from tests.fixtures.synthetic import voice_signal


def test_tracks_hold_and_interpolate():
    detections = {
        0: np.array([[10, 10, 30, 30]], np.float32),
        3: np.array([[16, 10, 36, 30]], np.float32),
    }

    tracks = tracking.link_tracks(detections, hold_frames=2)
    boxes = tracking.mask_boxes(tracks, frame_count=8, hold_frames=2)

    assert len(tracks) == 1
    assert [len(b) for b in boxes] == [1, 1, 1, 1, 1, 1, 0, 0]
    x1, y1, x2, y2 = boxes[1][0]
    assert x1 <= 12
    assert x2 >= 32
    assert boxes[5][0].tolist() == [16, 10, 36, 30]


def test_tracks_split_far_detections():
    detections = {
        0: np.array([[10, 10, 30, 30]], np.float32),
        3: np.array([[200, 10, 220, 30]], np.float32),
    }

    tracks = tracking.link_tracks(detections, hold_frames=2)

    assert len(tracks) == 2


def test_grow_box_favours_hair():
    x1, y1, x2, y2 = tracking.grow_box(np.array([100, 100, 200, 200]), 1.5, 1000, 1000)

    assert (x1, x2) == (75, 225)
    assert 100 - y1 == 30
    assert y2 - 200 == 20


def test_grow_box_clipped_to_frame():
    assert tracking.grow_box(np.array([0, 0, 50, 50]), 2.0, 60, 60) == (0, 0, 60, 60)


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_display_to_stored_round_trip(rotation):
    stored = np.zeros((40, 60), np.uint8)
    stored[5:10, 20:35] = 1
    display = masking.to_display(stored, rotation)
    ys, xs = np.nonzero(display)
    box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]])

    assert masking.display_to_stored(box, rotation, 60, 40).tolist() == [
        [20, 5, 35, 10]
    ]


def _planes(width=64, height=48):
    luma = np.tile(np.arange(width, dtype=np.uint8) * 3, (height, 1))
    chroma = np.full((height // 2, width // 2), 100, np.uint8)
    return [luma, chroma.copy(), chroma.copy()]


def test_fill_box_flat_colour():
    planes = _planes()

    masking.fill_box(planes, (10, 10, 30, 30))

    assert len(np.unique(planes[0][10:30, 10:30])) == 1
    assert planes[1][5:15, 5:15].min() == planes[1][5:15, 5:15].max() == 100
    assert planes[0][0, 0] == 0


def test_pixelate_box_coarse():
    planes = _planes()

    masking.pixelate_box(planes, (0, 0, 48, 48), blocks=3)

    assert len(np.unique(planes[0][0:48, 0:48])) <= 3


def test_keep_only_blacks_outside():
    planes = _planes()

    masking.keep_only(planes, [(8, 8, 24, 24)])

    assert (planes[0][:8] == 16).all()
    assert (planes[0][8:24, 8:24] != 16).any()
    assert (planes[1][:4] == 128).all()


def test_nms_keeps_best_of_overlaps():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.5, 0.9, 0.4], np.float32)

    assert nms(boxes, scores, 0.3).tolist() == [1, 2]


def test_detection_size_from_frame():
    assert detection_size(1280, 720, 512) == (512, 288, 0.4)
    assert detection_size(176, 144, 512) == (176, 144, 1.0)
    assert padded(144) == 160


def test_dynamic_model_matches_onnx_edit():
    onnx = pytest.importorskip("onnx")
    expected = onnx.load(str(centerface_path()))
    for value_info in [expected.graph.input[0], *expected.graph.output]:
        dims = value_info.type.tensor_type.shape.dim
        for index, name in ((0, "batch"), (2, "height"), (3, "width")):
            dims[index].ClearField("dim_value")
            dims[index].dim_param = name
    weights = {tensor.name for tensor in expected.graph.initializer}
    image = [v for v in expected.graph.input if v.name not in weights]
    del expected.graph.input[:]
    expected.graph.input.extend(image)

    rewritten = _dynamic_model_bytes(centerface_path())

    model = onnx.load_model_from_string(rewritten)
    assert model == expected
    assert len(model.graph.input) == 1
    shape = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in shape] == [
        "batch",
        3,
        "height",
        "width",
    ]


def test_detection_jobs_keep_order_and_bound():
    running = []
    peak = []

    def work(value):
        running.append(value)
        peak.append(len(running))
        running.remove(value)
        return value * 10

    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = _DetectionJobs(pool, limit=3)
        for value in range(20):
            jobs.submit(value, work, value)
            assert len(jobs._pending) <= 3

        done = jobs.finish()

    assert done == [(value, value * 10) for value in range(20)]
    assert max(peak) <= 2


def test_detection_jobs_limit_concurrency():
    lock = threading.Lock()
    running = [0]
    peak = [0]

    def work(value):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        threading.Event().wait(0.01)
        with lock:
            running[0] -= 1
        return value

    with ThreadPoolExecutor(max_workers=3) as pool:
        jobs = _DetectionJobs(pool, limit=6, concurrency=1)
        for value in range(12):
            jobs.submit(value, work, value)

        done = jobs.finish()

    assert [value for value, _ in done] == list(range(12))
    assert peak[0] == 1


def test_detection_jobs_raise_worker_error():
    def fail(_):
        raise DeidentificationError("face detector failed: test")

    with ThreadPoolExecutor(max_workers=1) as pool:
        jobs = _DetectionJobs(pool, limit=2)
        jobs.submit(0, fail, 0)
        with pytest.raises(DeidentificationError, match="face detector failed"):
            jobs.finish()


def test_baseline_checks_every_output_frame():
    faces = load_profile("baseline").settings["faces"]

    assert faces["residual_every"] == 1
    assert faces["detect_long_side"] == 512


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_every_profile_loads(name):
    profile = load_profile(name)

    assert {"faces", "text", "audio", "metadata", "encode"} <= set(profile.steps)
    assert (
        profile.settings["faces"]["residual_threshold"]
        < profile.settings["faces"]["threshold"]
    )


def test_profile_identifier_modes():
    assert load_profile("new-tech-research").step("identifiers")["mode"] == "random"
    assert load_profile("ai-diagnosis").step("identifiers")["mode"] == "pseudonym"
    assert load_profile("baseline").step("identifiers")["mode"] == "none"


def test_keep_options_only_for_clinical_research():
    with pytest.raises(ValidationError, match="no 'keep' step"):
        load_profile("baseline", keep_ranges=[(0, 1)])


def test_mcadams_moves_formants():
    signal = voice_signal(1.0)

    anonymised = mcadams(signal, 16000, alpha=0.8)

    def first_formant(samples):
        segment = samples[4000:4320] * np.hanning(320)
        roots = np.roots(lpc(segment, 12))
        freqs = np.sort(np.angle(roots[roots.imag > 0]) * 16000 / (2 * np.pi))
        return freqs[0]

    assert len(anonymised) == len(signal)
    assert first_formant(signal) == pytest.approx(700, abs=60)
    assert first_formant(anonymised) == pytest.approx(
        700**0.8 * (2 * np.pi / 16000) ** -0.2, rel=0.15
    )


def test_mcadams_unit_alpha_rejected():
    with pytest.raises(ValidationError, match="McAdams coefficient"):
        mcadams(np.zeros(100), 16000, alpha=1.0)


def test_mcadams_silence_stays_silent():
    assert not mcadams(np.zeros(1600), 16000).any()
