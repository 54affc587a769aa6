"""Concurrent appends from threads and processes give one unbroken chain."""

from __future__ import annotations

import subprocess
import sys
import threading

from enclave.audit import AuditLog
from enclave.catalog.db import Catalog

WORKER = """
import sys
from enclave.audit import AuditLog
from enclave.catalog.db import Catalog

url, key = sys.argv[1], bytes.fromhex(sys.argv[2])
name, count = sys.argv[3], int(sys.argv[4])
audit = AuditLog(Catalog(url), key)
for i in range(count):
    audit.append(
        actor=name, action="data.read", outcome="success", source="broker",
        detail={"i": i},
    )
"""


def _check_chain(audit: AuditLog, expected: int) -> None:
    report = audit.verify()
    assert report.ok, report
    assert report.count == expected
    assert [e.seq for e in audit.events()] == list(range(1, expected + 1))


def test_threads_append_one_chain(any_catalog: Catalog) -> None:
    audit = AuditLog(any_catalog, b"k" * 32)
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            for i in range(20):
                audit.append(
                    actor=name,
                    action="data.read",
                    outcome="success",
                    source="broker",
                    detail={"i": i},
                )
        except BaseException as exc:  # reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    _check_chain(audit, 80)
    for n in range(4):
        assert len(audit.events(actor=f"t{n}")) == 20


def test_processes_append_one_chain(any_catalog: Catalog) -> None:
    key = b"k" * 32
    audit = AuditLog(any_catalog, key)
    url = any_catalog.url.render_as_string(hide_password=False)

    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, key.hex(), f"p{n}", "25"],
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    audit.append(actor="main", action="data.list", outcome="success", source="cli")
    results = [(worker.wait(timeout=120), worker.stderr.read()) for worker in workers]
    for worker in workers:
        worker.stderr.close()

    assert results == [(0, ""), (0, "")]
    _check_chain(audit, 51)
