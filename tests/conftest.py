"""Shared fixtures; each area keeps its own in a plugin module under tests/fixtures."""

pytest_plugins = [
    "tests.fixtures.base",
    "tests.fixtures.catalog",
    "tests.fixtures.vault",
    "tests.fixtures.media",
    "tests.fixtures.hub",
    "tests.fixtures.broker",
    "tests.fixtures.synthetic",
]
