"""The audit trail: hash-chained records of every access and decision.

:mod:`enclave.audit.log` writes and verifies the chain in the catalog
database; ``enclave.audit.service`` accepts events from researchers'
processes over a Unix socket and appends them with the identity of the
connecting process.
"""

from __future__ import annotations

from enclave.audit.log import (
    ACTIONS,
    DETAIL_SCHEMAS,
    NOT_CAPTURED,
    OUTCOMES,
    SCRUBBED_KEYS,
    AuditLog,
    VerifyReport,
    create_audit_key,
    load_audit_key,
    scrub,
)

__all__ = [
    "ACTIONS",
    "DETAIL_SCHEMAS",
    "NOT_CAPTURED",
    "OUTCOMES",
    "SCRUBBED_KEYS",
    "AuditLog",
    "VerifyReport",
    "create_audit_key",
    "load_audit_key",
    "scrub",
]
