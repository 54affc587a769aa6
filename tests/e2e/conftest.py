"""The whole enclave on loopback, with the demo data, for the end-to-end tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from enclave.cli.init import initialize
from enclave.config import Settings
from enclave.demo import prepare_demo_data
from enclave.hub.launch import Running
from tests.fixtures.hub import running_test_hub, unique_user_prefix


@pytest.fixture(scope="module")
def enclave_stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Settings, Running]]:
    """Start the provider, proxy, hub, broker, audit and ethics services.

    The catalog contains the demo dataset and the approved demo project. Each
    test module gets its own stack, so one module's terminations do not
    reach another's tests.
    """
    base = Path(tempfile.mkdtemp(prefix="enclave-e2e-"))
    base.chmod(0o711)
    settings = Settings(
        home=base / "home",
        key_dir=base / "keys",
        run_dir=base / "run",
        db_url=f"sqlite:///{base / 'home' / 'catalog.sqlite'}",
        user_prefix=unique_user_prefix(),
    )
    saved = dict(os.environ)
    os.environ.update(
        ENCLAVE_HOME=str(settings.home),
        ENCLAVE_KEY_DIR=str(settings.key_dir),
        ENCLAVE_RUN_DIR=str(settings.run_dir),
        ENCLAVE_DB_URL=settings.db_url,
        ENCLAVE_USER_PREFIX=settings.user_prefix,
    )
    try:
        initialize()
        prepare_demo_data(settings)
        initialize()  # hands the files written above to the broker's OS user
        state_dir = tmp_path_factory.mktemp("e2e-hub")
        services = ["broker", "audit", "ethics"]
        with running_test_hub(settings, state_dir, services=services) as hub:
            yield settings, hub
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(base, ignore_errors=True)
