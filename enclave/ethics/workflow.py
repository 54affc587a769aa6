"""The ethics committee's workflow in one namespace.

A researcher applies (:func:`apply`) and the project is submitted for
review. Committee members who are neither the applicant, the principal
investigator nor a member review it (:func:`review_application`). An approved
project's scope grows only by an amendment (:func:`submit_amendment`,
:func:`review_amendment`). Security administrators :func:`suspend`,
:func:`resume` and :func:`terminate` projects. Each member accepts the data
use agreement (:func:`accept_agreement`) before their first data access,
which the broker checks with :func:`has_accepted_agreement`.

Every function takes an open catalog session, locks the project's row and
records its decision in the audit trail in the same transaction. On SQLite,
open the session with ``catalog.session(immediate=True)``.
"""

from __future__ import annotations

from enclave.ethics.acceptance import accept_agreement, has_accepted_agreement
from enclave.ethics.amendments import (
    amendment_approvals_required,
    pending_amendment,
    review_amendment,
    submit_amendment,
    withdraw_amendment,
)
from enclave.ethics.applications import (
    application_of,
    apply,
    resubmit,
    review_application,
)
from enclave.ethics.oversight import resume, suspend, terminate
from enclave.ethics.review import (
    APPLICATION,
    DecisionConflict,
    active_members,
    lock_project,
    required_approvals_for,
)

__all__ = [
    "APPLICATION",
    "DecisionConflict",
    "accept_agreement",
    "active_members",
    "amendment_approvals_required",
    "application_of",
    "apply",
    "has_accepted_agreement",
    "lock_project",
    "pending_amendment",
    "required_approvals_for",
    "resubmit",
    "resume",
    "review_amendment",
    "review_application",
    "submit_amendment",
    "suspend",
    "terminate",
    "withdraw_amendment",
]
