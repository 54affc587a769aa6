"""Fixtures of the data API tests: those of :mod:`tests.broker.harness`."""

from tests.broker.harness import (  # noqa: F401
    broker,
    enclave_template,
    member,
    outsider,
    private_broker,
    socket_dir,
)
