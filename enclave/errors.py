"""The exception hierarchy of the enclave package.

Every error the package raises on purpose derives from :class:`EnclaveError`.
Validation errors say which value is wrong and how to fix it; integrity and
cryptographic errors stay deliberately opaque so that they leak nothing about
the key or the position of the damage.
"""

from __future__ import annotations

__all__ = [
    "AuditUnavailable",
    "ConfigurationError",
    "DeidentificationError",
    "EnclaveError",
    "IngestError",
    "IntegrityError",
    "NotFound",
    "PermissionDenied",
    "ResidualCheckFailed",
    "ValidationError",
]


class EnclaveError(Exception):
    """Base class of every error raised by the enclave package."""


class ValidationError(EnclaveError, ValueError):
    """An input value is invalid; the message names the value and the fix."""


class ConfigurationError(EnclaveError):
    """The enclave's settings, key files or folders are missing or unusable."""


class IngestError(ValidationError):
    """A file offered for ingest cannot be stored; nothing was written."""


class IntegrityError(EnclaveError):
    """Stored ciphertext or an audit record failed its integrity check."""


class NotFound(EnclaveError, LookupError):
    """A named asset, dataset, project or user does not exist."""


class PermissionDenied(EnclaveError, PermissionError):
    """The caller is not allowed to do this; the refusal was audited."""


class DeidentificationError(EnclaveError):
    """De-identification could not run to completion; no output was published."""


class ResidualCheckFailed(DeidentificationError):
    """The check after de-identification still found a face or text."""


class AuditUnavailable(EnclaveError):
    """The audit trail cannot be written, so the operation was not performed."""
