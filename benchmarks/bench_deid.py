"""Benchmark video de-identification against the ``deface`` command.

Both tools process the same 720p clip in one run of this script. The clip
is synthetic (see ``tests/fixtures/synthetic.py``): 10 seconds of 1280x720
H.264 at 25 fps, with two real face photographs moving across it and two
lines of burned-in identity text, so every face and text box is known.

For each tool the script runs the whole command (``enclave deid ...
--profile baseline`` and ``deface`` with its defaults) ``--runs`` times and
reports the median wall time, the frames per second, the CPU time and load
average of each run, and the recall of faces and text. A ground-truth box
counts as masked when the detail (mean squared Laplacian of the luma) left
inside it is below a quarter of the input's, which a solid fill, a coarse
mosaic and a strong blur all meet.

Usage::

    .venv/bin/python benchmarks/bench_deid.py --runs 3 --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.synthetic import SyntheticClip, write_clip  # noqa: E402

DETAIL_LEFT = 0.25
TEXT_LINES = ("PATIENT: JANE DOE", "MRN 0012345  2026-03-04")


def make_clip(folder: Path, seconds: int) -> SyntheticClip:
    return write_clip(
        folder / "bench720.mp4",
        width=1280,
        height=720,
        frames=seconds * 25,
        fps=25,
        text=TEXT_LINES,
        tags=True,
    )


def run_timed(command: list[str], runs: int) -> dict[str, Any]:
    """Run ``command`` ``runs`` times and return its times and load averages.

    CPU time is the user plus system time of the command and its children,
    which other jobs on a shared machine change less than the wall time. The
    1-minute load average is read just before each run.
    """
    walls, users, systems, loads = [], [], [], []
    for _ in range(runs):
        loads.append(os.getloadavg()[0])
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        completed = subprocess.run(command, capture_output=True, text=True)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        users.append(after.ru_utime - before.ru_utime)
        systems.append(after.ru_stime - before.ru_stime)
        if completed.returncode != 0:
            raise SystemExit(
                f"{command[0]} failed ({completed.returncode}):\n"
                f"{completed.stderr[-2000:]}"
            )
    cpus = [user + system for user, system in zip(users, systems, strict=True)]
    return {
        "wall_s_median": statistics.median(walls),
        "wall_s_min": min(walls),
        "wall_s_max": max(walls),
        "cpu_s_median": statistics.median(cpus),
        "wall_s_runs": [round(value, 2) for value in walls],
        "cpu_user_s_runs": [round(value, 2) for value in users],
        "cpu_system_s_runs": [round(value, 2) for value in systems],
        "load_average_before_runs": [round(value, 2) for value in loads],
    }


def baseline_settings() -> dict[str, Any]:
    """Return the baseline profile's settings that decide the speed."""
    from enclave.deid.profiles import load_profile

    settings = load_profile("baseline").settings
    faces, text, encode = settings["faces"], settings["text"], settings["encode"]
    return {
        "faces_detect_long_side": faces["detect_long_side"],
        "faces_detect_every": faces["detect_every"],
        "faces_residual_every": faces["residual_every"],
        "text_sample_seconds": text["sample_seconds"],
        "text_residual_seconds": text["residual_seconds"],
        "encode_codec": encode["codec"],
        "encode_preset": encode["preset"],
        "encode_crf": encode["crf"],
    }


def detail(luma: np.ndarray) -> float:
    import cv2

    return float(np.mean(cv2.Laplacian(luma.astype(np.float32), cv2.CV_32F) ** 2))


def recall(clip: SyntheticClip, output: Path) -> dict[str, float]:
    faces_masked = faces_total = text_masked = text_total = 0
    with av.open(str(clip.path)) as source, av.open(str(output)) as result:
        frames = zip(source.decode(video=0), result.decode(video=0), strict=False)
        for index, (original, masked) in enumerate(frames):
            before = original.to_ndarray(format="gray")
            after = masked.to_ndarray(format="gray")
            for box_list, is_face in ((clip.faces[index], True), (clip.text, False)):
                for x1, y1, x2, y2 in box_list:
                    reference = detail(before[y1:y2, x1:x2])
                    left = detail(after[y1:y2, x1:x2])
                    hit = reference > 0 and left < DETAIL_LEFT * reference
                    if is_face:
                        faces_total += 1
                        faces_masked += hit
                    else:
                        text_total += 1
                        text_masked += hit
    return {
        "face_recall": faces_masked / max(1, faces_total),
        "text_recall": text_masked / max(1, text_total),
        "face_boxes": faces_total,
        "text_boxes": text_total,
    }


def frame_count(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {len(os.sched_getaffinity(0))} cores, {platform.platform()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=int, default=3, help="timed runs of each command"
    )
    parser.add_argument(
        "--seconds", type=int, default=10, help="length of the clip in seconds"
    )
    parser.add_argument(
        "--json", type=Path, help="also write the results to this JSON file"
    )
    parser.add_argument(
        "--skip-deface",
        action="store_true",
        help=(
            "time only the enclave command; deface took 46 s a run on the "
            "2-core machine of docs/benchmarks.md"
        ),
    )
    args = parser.parse_args()

    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory(prefix="bench-deid-") as folder:
        work = Path(folder)
        clip = make_clip(work, args.seconds)
        frames = frame_count(clip.path)
        ours_out, deface_out = work / "enclave.mp4", work / "deface.mp4"
        commands = {
            "enclave": [
                str(bin_dir / "enclave"),
                "deid",
                str(clip.path),
                str(ours_out),
                "--profile",
                "baseline",
            ],
            "deface": [str(bin_dir / "deface"), str(clip.path), "-o", str(deface_out)],
        }
        if args.skip_deface:
            del commands["deface"]
        results = {}
        for name, command in commands.items():
            timing = run_timed(command, args.runs)
            output = ours_out if name == "enclave" else deface_out
            results[name] = {
                "command": " ".join(
                    Path(command[0]).name if i == 0 else part
                    for i, part in enumerate(command)
                ),
                **timing,
                "fps": frames / timing["wall_s_median"],
                **recall(clip, output),
            }

    summary = {
        "clip": f"1280x720 H.264, {frames} frames at 25 fps, 2 faces, 2 text lines",
        "machine": machine(),
        "enclave_settings": baseline_settings(),
        "runs": args.runs,
        "results": results,
    }
    if "deface" in results:
        summary["speed_ratio"] = results["enclave"]["fps"] / results["deface"]["fps"]
        summary["face_recall_ratio"] = results["enclave"]["face_recall"] / max(
            1e-9, results["deface"]["face_recall"]
        )
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
