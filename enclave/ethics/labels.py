"""English labels of the stored codes; the pages translate them with the locale."""

from __future__ import annotations

__all__ = [
    "AMENDMENT_STATUS_LABELS",
    "CAUSE_MESSAGES",
    "DECISION_LABELS",
    "STATUS_LABELS",
]

STATUS_LABELS = {
    "draft": "Draft",
    "submitted": "Waiting for review",
    "changes_requested": "Changes requested",
    "approved": "Approved",
    "rejected": "Rejected",
    "suspended": "Suspended",
    "terminated": "Terminated",
    "ended": "Ended",
}

DECISION_LABELS = {
    "approve": "Approve",
    "approve_with_conditions": "Approve with conditions",
    "request_changes": "Request changes",
    "reject": "Reject",
}

AMENDMENT_STATUS_LABELS = {
    "submitted": "Waiting for review",
    "changes_requested": "Changes requested",
    "approved": "Approved",
    "rejected": "Rejected",
    "withdrawn": "Withdrawn",
}

CAUSE_MESSAGES = {
    "ended": (
        "Your access to project %(project)s ended on %(date)s because the "
        "project's end date passed."
    ),
    "terminated": (
        "Project %(project)s was terminated on %(date)s, so your access ended. "
        "Reason: %(reason)s"
    ),
    "suspended": (
        "Project %(project)s was suspended on %(date)s, so your access is paused "
        "until a security administrator resumes it, and the project's working "
        "copies were destroyed. Reason: %(reason)s"
    ),
}
"""Notice texts shown to a member whose access ended, by cause."""
