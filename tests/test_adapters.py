"""peftrec.adapters: a saved head from a local folder or a Hub repo id (over real HTTP, then from the cache)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import GITATTRIBUTES, Repo, hub_server  # noqa: F401 - hub_server is a fixture
from test_recommender import trained_run

from peftrec.adapters import adapter_recipe, resolve_adapter
from peftrec.errors import PeftrecError


@pytest.fixture(scope="module")
def click_run(tmp_path_factory, tiny_model_dir) -> Path:
    return trained_run("click", tmp_path_factory, tiny_model_dir)


def test_local_adapter_folder_and_run_folder_resolve(click_run):
    adapter = click_run / "adapter"
    assert resolve_adapter(adapter) == adapter.resolve()
    assert resolve_adapter(str(click_run)) == adapter.resolve()  # a run folder: its best-step head
    recipe = adapter_recipe(adapter)
    assert recipe.task.name == "click" and recipe.trainer.max_steps == 10 and recipe.data.history_len == 5


def test_local_errors_name_the_problem_and_the_fix(tmp_path):
    with pytest.raises(PeftrecError, match="holds no adapter \\(no adapter_config.json\\)"):
        resolve_adapter(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(PeftrecError, match="is a file: pass the folder"):
        resolve_adapter(tmp_path / "weights.bin")
    with pytest.raises(PeftrecError, match="not an existing folder .* and not a Hugging Face Hub repo id"):
        resolve_adapter(tmp_path / "missing" / "adapter")
    with pytest.raises(PeftrecError, match="not a Hugging Face Hub repo id"):
        resolve_adapter("just-a-name")
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(PeftrecError, match="was not made by peftrec: pass a recipe"):
        adapter_recipe(tmp_path)


# Runs in a fresh interpreter with the Hub settings in its environment (huggingface_hub reads some of
# them at import); prints what each step resolved to, or the error.
HUB_STEPS = r"""
import json, os, sys
from peftrec.adapters import resolve_adapter
from peftrec.errors import PeftrecError

def attempt(name):
    try:
        return str(resolve_adapter(name))
    except PeftrecError as err:
        return "error: " + str(err)

out = {"online": attempt("me/toy-click"), "no_adapter": attempt("me/not-an-adapter"),
       "missing": attempt("me/missing")}
os.environ["PEFTREC_OFFLINE"] = "1"
out["offline"] = attempt("me/toy-click")
out["offline_uncached"] = attempt("me/other")
os.environ["PEFTREC_OFFLINE"] = "0"
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens there: the Hub is unreachable
out["unreachable"] = attempt("me/toy-click")
print(json.dumps(out))
"""


def test_hub_repo_downloads_then_serves_from_the_cache(click_run, hub_server, tmp_path):  # noqa: F811
    files = {p.name: p.read_bytes() for p in (click_run / "adapter").iterdir() if p.is_file()}
    for repo_id, content in (("me/toy-click", files), ("me/not-an-adapter", {"README.md": b"# hi\n"})):
        repo = Repo(repo_id, private=False)
        repo.add_commit("initial commit", {".gitattributes": GITATTRIBUTES})
        repo.add_commit("Upload", content)
        hub_server.repos[repo_id] = repo
    env = {
        **os.environ,
        "HF_ENDPOINT": hub_server.url,
        "HF_HUB_CACHE": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "0",
        "PEFTREC_OFFLINE": "0",
    }
    proc = subprocess.run(
        [sys.executable, "-c", HUB_STEPS], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    online = Path(out["online"])
    assert online.is_relative_to(tmp_path / "hf") and online.parts[-2] == "snapshots"
    assert online.parts[-1] == hub_server.repos["me/toy-click"].head.oid  # the commit repo_info named
    assert {p.name: p.read_bytes() for p in online.iterdir()} == files
    assert adapter_recipe(online) == adapter_recipe(click_run / "adapter")
    assert out["no_adapter"].startswith("error: the Hub repo me/not-an-adapter has no adapter_config.json")
    assert "me/missing does not exist on the Hub" in out["missing"]
    assert "not in the local Hugging Face cache either" in out["missing"]
    # Offline, or with the Hub unreachable, the copy downloaded before serves.
    assert out["offline"] == out["online"] == out["unreachable"]
    assert "offline mode (PEFTREC_OFFLINE set)" in out["offline_uncached"]
    assert "not in the local Hugging Face cache either" in out["offline_uncached"]
