"""The GPU machine's payload (benchmarks/scripts/device_payload.py): packed in chunks here, checked and
unpacked there with the standard library alone. No network: the files are made up."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "scripts" / "device_payload.py"


def load_script():
    spec = importlib.util.spec_from_file_location("device_payload", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def stage(tmp_path: Path) -> Path:
    """A payload folder: two wheels' worth of incompressible bytes and one small file."""
    root = tmp_path / "stage"
    (root / "python").mkdir(parents=True)
    (root / "cache" / "wheels").mkdir(parents=True)
    rng = random.Random(0)
    (root / "python" / "a-1.0-py3-none-any.whl").write_bytes(rng.randbytes(70_000))
    (root / "cache" / "wheels" / "model-0.1-py3-none-any.whl").write_bytes(rng.randbytes(50_000))
    (root / "python" / "b-2.0-py3-none-any.whl").write_bytes(b"small")
    return root


def assemble(chunks: Path, to: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "assemble", "--chunks", str(chunks), "--to", str(to)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_pack_splits_into_chunks_of_the_size_asked_and_assemble_restores_every_file(stage, tmp_path):
    out = tmp_path / "xfer"
    manifest = load_script().pack(stage, out, 40_000, python_version="3.12", models=["m"])
    assert manifest["python_version"] == "3.12" and manifest["models"] == ["m"]
    assert manifest["files"] == [
        "cache/wheels/model-0.1-py3-none-any.whl",
        "python/a-1.0-py3-none-any.whl",
        "python/b-2.0-py3-none-any.whl",
    ]
    sizes = [c["bytes"] for c in manifest["chunks"]]
    assert all(size == 40_000 for size in sizes[:-1]) and 0 < sizes[-1] <= 40_000
    assert sum(sizes) == manifest["bytes"] > 120_000  # the tar holds both large files
    assert sorted(p.name for p in out.iterdir()) == [f"c{k}" for k in range(len(sizes))] + ["manifest.json"]
    joined = b"".join((out / c["name"]).read_bytes() for c in manifest["chunks"])
    assert hashlib.sha256(joined).hexdigest() == manifest["sha256"]
    assert json.loads((out / "manifest.json").read_text()) == manifest

    payload = tmp_path / "payload"
    proc = assemble(out, payload)
    assert proc.returncode == 0, proc.stderr
    for name in manifest["files"]:
        assert (payload / name).read_bytes() == (stage / name).read_bytes(), name
    assert not (out / "payload.tar").exists()  # the joined tar is removed once unpacked
    again = assemble(out, payload)  # a later call on the same machine
    assert again.returncode == 0 and "already unpacked" in again.stdout


def test_assemble_names_a_missing_or_damaged_chunk_and_unpacks_nothing(stage, tmp_path):
    out = tmp_path / "xfer"
    load_script().pack(stage, out, 40_000)
    (out / "c1").rename(tmp_path / "c1")
    proc = assemble(out, tmp_path / "payload")
    assert proc.returncode != 0 and "chunks missing from" in proc.stderr and "c1" in proc.stderr
    damaged = bytearray((tmp_path / "c1").read_bytes())
    damaged[100] ^= 1
    (out / "c1").write_bytes(bytes(damaged))
    proc = assemble(out, tmp_path / "payload")
    assert proc.returncode != 0 and "chunk c1 is damaged" in proc.stderr
    assert not (tmp_path / "payload").exists()


def test_assemble_refuses_chunks_of_two_different_builds(stage, tmp_path):
    # Each chunk matches its own build's manifest, but the joined bytes are not one build's payload.
    first, second = tmp_path / "first", tmp_path / "second"
    load_script().pack(stage, first, 40_000)
    (stage / "python" / "b-2.0-py3-none-any.whl").write_bytes(b"other")
    manifest = load_script().pack(stage, second, 40_000)
    mixed = json.loads((first / "manifest.json").read_text())
    mixed["chunks"][-1] = manifest["chunks"][-1]
    (first / "manifest.json").write_text(json.dumps(mixed))
    (second / manifest["chunks"][-1]["name"]).replace(first / manifest["chunks"][-1]["name"])
    proc = assemble(first, tmp_path / "payload")
    assert proc.returncode != 0 and "chunks of two different builds" in proc.stderr
