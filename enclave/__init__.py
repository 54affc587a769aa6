"""Secure research enclave for hospital video."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "open_dataset"]


def open_dataset(name: str, **kwargs):  # type: ignore[no-untyped-def]
    """Open a de-identified dataset of an approved project; see :mod:`enclave.data`."""
    from enclave.data import open_dataset as _open_dataset

    return _open_dataset(name, **kwargs)
