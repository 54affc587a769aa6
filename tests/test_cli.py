"""The command line loads only the sub-command it runs."""

from __future__ import annotations

import subprocess
import sys

from enclave.cli import COMMAND_MODULES, _requested_modules


def test_named_command_loads_only_its_module() -> None:
    assert _requested_modules(["deid", "in.mp4", "out.mp4"]) == ["enclave.cli.deid"]
    assert _requested_modules(["--log-level", "INFO", "reid", "list"]) == [
        "enclave.cli.reid"
    ]
    assert _requested_modules(["--log-level=DEBUG", "audit"]) == ["enclave.cli.audit"]


def test_help_and_unknown_commands_load_every_module() -> None:
    assert _requested_modules([]) == COMMAND_MODULES
    assert _requested_modules(["--help"]) == COMMAND_MODULES
    assert _requested_modules(["nonsense"]) == COMMAND_MODULES


def test_deid_does_not_import_the_catalog() -> None:
    code = (
        "import sys\n"
        "from enclave.cli import main\n"
        "try:\n"
        "    main(['deid', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('sqlalchemy', 'pydicom')\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"
