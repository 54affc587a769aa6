"""The ethics committee's review of research projects, and its hub service page.

:mod:`enclave.ethics.workflow` contains the decisions (apply, review, amend,
suspend, terminate, accept the data use agreement),
:mod:`enclave.ethics.app` the JupyterHub service that shows them, and
:mod:`enclave.ethics.models` their tables.
"""

from __future__ import annotations

from typing import Any

__all__ = ["accept_agreement", "has_accepted_agreement"]


def __getattr__(name: str) -> Any:
    # Lazy, because enclave.catalog.models imports enclave.ethics.models while
    # it is still being imported itself.
    if name in __all__:
        from enclave.ethics import workflow

        return getattr(workflow, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
