"""Frames per second of ``open_dataset(...).compute()`` against decord reading directly.

Run as root, because it creates a throwaway OS user ``enc-bench<random>`` for
the reader (the broker serves hub users only) and removes it afterwards::

    .venv/bin/python benchmarks/bench_open_dataset.py --sample bikes --rounds 10

The script builds a temporary enclave (keys, SQLite catalog, vault) holding one
sample clip as a dataset item, starts ``enclave broker serve`` on a socket,
and runs the measurement as the throwaway user. The measurement is an
in-process paired loop: each round decodes the whole item once through the
broker (``open_dataset(name)[path].frames.compute()``) and once with decord
straight from the same plaintext file, in alternating order, and the ratio is
taken round by round. A first, uncounted round opens the broker's decoder
cache (decryption and decord's index) and is reported on its own.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import pwd
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLES = ("carphone", "bikes")
DATASET = "bench-study"
ITEM = "clips/0001"
REVIEWERS = ("rita", "rolf", "ruth")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sample", choices=SAMPLES, default="bikes", help="clip to read"
    )
    parser.add_argument("--rounds", type=int, default=10, help="counted rounds")
    parser.add_argument(
        "--chunk-frames", type=int, default=16, help="frames per Dask chunk"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--plaintext", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure:
        print(json.dumps(measure(args.plaintext, args.rounds, args.chunk_frames)))
        return 0
    if os.geteuid() != 0:
        parser.error("run as root: the reader runs as a throwaway OS user enc-bench*")
    return run(args)


def run(args: argparse.Namespace) -> int:
    from enclave import samples

    sample = (
        samples.carphone_path() if args.sample == "carphone" else samples.bikes_path()
    )
    root = Path(tempfile.mkdtemp(prefix="enclave-bench-"))
    root.chmod(0o755)
    user = f"enc-bench{secrets.token_hex(3)}"
    subprocess.run(
        ["useradd", "--create-home", "--shell", "/usr/sbin/nologin", user],
        check=True,
        capture_output=True,
    )
    broker = None
    try:
        settings = build_enclave(root / "enclave", sample, user.removeprefix("enc-"))
        # decord's own copy of the plaintext, readable by the reader.
        plaintext = root / f"plain{sample.suffix}"
        shutil.copyfile(sample, plaintext)
        plaintext.chmod(0o644)

        socket_path = root / "run" / "broker.sock"
        broker = start_broker(settings, socket_path, root / "broker.log")
        results = measure_as(user, socket_path, plaintext, args)
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(timeout=30)
        subprocess.run(["userdel", "--remove", user], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)

    results["sample"] = sample.name
    results["machine"] = machine()
    results["command"] = " ".join([".venv/bin/python", *sys.argv])
    print_report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def build_enclave(root: Path, sample: Path, member: str):  # type: ignore[no-untyped-def]
    from enclave.audit import AuditLog, create_audit_key, load_audit_key
    from enclave.catalog.db import Catalog
    from enclave.catalog.models import Dataset, DatasetItem, ProjectStatus
    from enclave.config import Settings
    from enclave.ingest import store_asset
    from enclave.projects import approve_project, create_project, submit_project
    from enclave.vault import KeyRing, Vault

    root.mkdir(mode=0o700)
    settings = Settings(
        home=root / "home",
        key_dir=root / "keys",
        run_dir=root.parent / "run",
        db_url=f"sqlite:///{root / 'home' / 'catalog.sqlite'}",
    )
    settings.home.mkdir(mode=0o700)
    settings.key_dir.mkdir(mode=0o700)
    keyring = KeyRing.create(settings.master_key_path)
    create_audit_key(settings.audit_key_path)
    catalog = Catalog(settings.db_url)
    catalog.upgrade()
    audit = AuditLog(catalog, load_audit_key(settings.audit_key_path))
    vault = Vault(settings.vault_dir, keyring)

    # The sample is stored as it is: de-identification changes the pixels,
    # not the cost of decrypting and decoding them.
    asset = store_asset(
        catalog,
        vault,
        audit,
        sample.read_bytes(),
        name=f"clip{sample.suffix}",
        category="teaching",
        level=3,
        source_id=None,
        profile=None,
        deid_report=None,
        actor="bench",
    )
    with catalog.session() as session:
        dataset = Dataset(
            name=DATASET,
            category="teaching",
            level=3,
            profile="baseline",
            created_by="bench",
        )
        session.add(dataset)
        session.flush()
        session.add(DatasetItem(dataset_id=dataset.id, asset_id=asset.id, path=ITEM))

    today = dt.date.today()
    with catalog.session(immediate=True) as session:
        create_project(
            session,
            name="bench-project",
            title="Benchmark",
            purpose="research",
            pi=member,
            members=[member],
            datasets=[DATASET],
            starts_on=today,
            ends_on=today + dt.timedelta(days=1),
            created_by=member,
            audit=audit,
        )
    with catalog.session(immediate=True) as session:
        submit_project(session, "bench-project", member, audit=audit)
    for reviewer in REVIEWERS:
        with catalog.session(immediate=True) as session:
            project = approve_project(session, "bench-project", reviewer, audit=audit)
            if project.status == ProjectStatus.APPROVED:
                break
    catalog.dispose()
    return settings


def start_broker(
    settings, socket_path: Path, log_path: Path
) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    from enclave.data import BrokerClient
    from enclave.errors import EnclaveError

    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ENCLAVE_HOME": str(settings.home),
        "ENCLAVE_KEY_DIR": str(settings.key_dir),
        "ENCLAVE_RUN_DIR": str(socket_path.parent),
        "ENCLAVE_DB_URL": settings.db_url,
    }
    command = [
        sys.executable,
        "-c",
        "import sys; from enclave.cli import main; sys.exit(main())",
        "broker",
        "serve",
        "--socket",
        str(socket_path),
        "--run-as-root",
    ]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, env=env, stdout=log_file, stderr=log_file)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"broker exited:\n{log_path.read_text()[-2000:]}")
        try:
            BrokerClient(socket_path, timeout=5).health()
            return process
        except EnclaveError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit("broker did not start within 60 s")


def measure_as(
    user: str, socket_path: Path, plaintext: Path, args: argparse.Namespace
) -> dict:
    entry = pwd.getpwnam(user)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--measure",
        "--plaintext",
        str(plaintext),
        "--rounds",
        str(args.rounds),
        "--chunk-frames",
        str(args.chunk_frames),
    ]
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": entry.pw_dir,
        "ENCLAVE_BROKER_SOCKET": str(socket_path),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    completed = subprocess.run(
        command,
        user=entry.pw_uid,
        group=entry.pw_gid,
        extra_groups=[],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"measurement failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def measure(plaintext: Path, rounds: int, chunk_frames: int) -> dict:
    """Run the paired loop in this process, as the throwaway hub user."""
    import decord
    import numpy as np

    import enclave

    def through_broker() -> np.ndarray:
        tree = enclave.open_dataset(DATASET, chunk_frames=chunk_frames)
        return tree[ITEM].frames.compute().values

    def with_decord() -> np.ndarray:
        reader = decord.VideoReader(str(plaintext), ctx=decord.cpu(0))
        return reader.get_batch(list(range(len(reader)))).asnumpy()

    start = time.perf_counter()
    first = through_broker()
    cold_s = time.perf_counter() - start
    reference = with_decord()
    if not np.array_equal(first, reference):
        raise SystemExit("the broker's frames differ from decord's")
    frames = int(reference.shape[0])

    pairs = []
    for number in range(rounds):
        # Alternate which side goes first, so that drift in machine speed
        # within a round does not favour one side.
        order = (
            (through_broker, with_decord)
            if number % 2 == 0
            else (with_decord, through_broker)
        )
        seconds = {}
        for reader in order:
            start = time.perf_counter()
            reader()
            seconds[reader.__name__] = time.perf_counter() - start
        pairs.append(seconds)

    broker_fps = [frames / p["through_broker"] for p in pairs]
    decord_fps = [frames / p["with_decord"] for p in pairs]
    ratios = [b / d for b, d in zip(broker_fps, decord_fps, strict=True)]
    return {
        "frames": frames,
        "shape": list(reference.shape),
        "chunk_frames": chunk_frames,
        "rounds": rounds,
        "cold_first_read_s": cold_s,
        "broker_fps": broker_fps,
        "decord_fps": decord_fps,
        "ratio": ratios,
    }


def machine() -> dict:
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import dask
    import decord
    import xarray

    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "decord": decord.__version__,
        "dask": dask.__version__,
        "xarray": xarray.__version__,
    }


def print_report(results: dict) -> None:
    def spread(values: list[float]) -> str:
        return (
            f"{statistics.median(values):8.1f}  "
            f"(min {min(values):.1f}, max {max(values):.1f})"
        )

    shape = results["shape"][1:]
    print(f"sample {results['sample']}: {results['frames']} frames of {shape}")
    print(f"machine: {results['machine']}")
    print(f"rounds: {results['rounds']}, chunk_frames: {results['chunk_frames']}")
    cold = results["cold_first_read_s"]
    print(f"first read through the broker (decrypt + open): {cold:.2f} s")
    print(f"open_dataset().compute() fps  {spread(results['broker_fps'])}")
    print(f"decord direct fps             {spread(results['decord_fps'])}")
    ratio = results["ratio"]
    print(
        f"ratio broker/decord          {statistics.median(ratio):8.2f}  "
        f"(min {min(ratio):.2f}, max {max(ratio):.2f})"
    )


if __name__ == "__main__":
    sys.exit(main())
