"""Classification policy: the five levels, the four categories and reviews.

The default rules live in ``levels.toml`` inside this package; the catalog
contains the rules in force, which :func:`set_rule` edits.
"""

from __future__ import annotations

from enclave.policy.classification import (
    REVIEW_INTERVAL,
    check_category,
    due_for_review,
    reclassify,
)
from enclave.policy.levels import (
    EDITABLE_FIELDS,
    LEVELS,
    CategoryInfo,
    RuleDefaults,
    categories,
    check_level,
    check_rule,
    default_rules,
    rules_for,
    seed_level_rules,
    set_rule,
)

__all__ = [
    "EDITABLE_FIELDS",
    "LEVELS",
    "REVIEW_INTERVAL",
    "CategoryInfo",
    "RuleDefaults",
    "categories",
    "check_category",
    "check_level",
    "check_rule",
    "default_rules",
    "due_for_review",
    "reclassify",
    "rules_for",
    "seed_level_rules",
    "set_rule",
]
