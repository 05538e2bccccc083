"""`python -m peftrec.evaluate adapter=...`: a saved head evaluated from its own recipe, overrides on top."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hub_server import GITATTRIBUTES, Repo, hub_server  # noqa: F401 - hub_server is a fixture
from hydra import compose, initialize_config_dir
from test_recommender import cli, trained_run

from peftrec.errors import PeftrecError
from peftrec.evaluate import evaluation_argv
from peftrec.paths import CONF_DIR


@pytest.fixture(scope="module")
def click_run(tmp_path_factory, tiny_model_dir) -> Path:
    return trained_run("click", tmp_path_factory, tiny_model_dir)


def composed(*argv: str):
    """The config the evaluate command composes for these arguments (Hydra's compose API, in process)."""
    arguments = [a for a in evaluation_argv(list(argv)) if not a.startswith("-")]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=arguments)


def test_saved_recipe_is_the_base_and_the_command_line_wins(click_run):
    saved = yaml.safe_load((click_run / "adapter" / "peftrec_recipe.yaml").read_text())
    cfg = composed(f"adapter={click_run / 'adapter'}")
    assert cfg.model.name == saved["model"]["name"] and dict(cfg.task) == saved["task"]
    assert dict(cfg.data) == saved["data"] and cfg.peft._target_ == saved["peft"]["_target_"]
    assert cfg.trainer.max_steps == 0 and saved["trainer"]["max_steps"] == 10  # evaluation only
    assert cfg.adapter == str(click_run / "adapter")
    # A key edits the saved section; a group choice replaces it with conf/<group>/<option>.yaml.
    cfg = composed(f"adapter={click_run}", "data.protocol=per_user", "seed=3")
    assert cfg.data.protocol == "per_user" and cfg.data.interactions == saved["data"]["interactions"]
    assert cfg.seed == 3
    cfg = composed(f"adapter={click_run}", "data=movielens_1m")
    assert cfg.data.source == "movielens-1m" and "interactions" not in cfg.data
    assert cfg.task.template == saved["task"]["template"] and cfg.model.name == saved["model"]["name"]


def test_bad_arguments_name_the_fix(click_run, tmp_path):
    with pytest.raises(PeftrecError, match="name the head to evaluate"):
        evaluation_argv(["data.protocol=full"])
    with pytest.raises(PeftrecError, match="evaluate does not train"):
        evaluation_argv([f"adapter={click_run}", "trainer.max_steps=5"])
    with pytest.raises(PeftrecError, match="holds no adapter"):
        evaluation_argv([f"adapter={tmp_path}"])
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(PeftrecError, match="this adapter was not made by peftrec: pass a recipe"):
        evaluation_argv([f"adapter={tmp_path}"])
    proc = subprocess.run(
        [sys.executable, "-m", "peftrec.evaluate", "data=movielens_1m"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("peftrec: error: name the head to evaluate")


def test_evaluate_reproduces_the_training_runs_test_metrics_and_takes_other_data(click_run, tmp_path):
    sweep = tmp_path / "sweep"
    # Two jobs in one process: the training run's own split, then another protocol.
    proc = cli(
        "peftrec.evaluate", "-m", f"adapter={click_run / 'adapter'}", "data.protocol=full,per_user",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = json.loads((click_run / "result.json").read_text())
    same, other = (json.loads((sweep / str(k) / "result.json").read_text()) for k in (0, 1))
    assert same["metrics"]["test"] == trained["metrics"]["test"]  # the same head on the same split: exact
    assert same["metrics"]["validation"] == trained["metrics"]["validation"]
    assert same["split"]["fingerprint"] == trained["split"]["fingerprint"]
    assert same["method"] == "lora" and same["recipe"] == "evaluate" and same["steps"] == 0
    assert same["adapter_source"] == str(click_run / "adapter")
    assert other["split"]["params"]["protocol"] == "per_user" and other["users"]["test"] == 40
    assert other["split"]["fingerprint"] != trained["split"]["fingerprint"]
    assert 0.0 <= other["metrics"]["test"]["auc"] <= 1.0


def test_evaluate_resolves_a_hub_repo_id(click_run, hub_server, tmp_path):  # noqa: F811 - the fixture
    repo = Repo("me/toy-click", private=False)
    repo.add_commit("initial commit", {".gitattributes": GITATTRIBUTES})
    files = {p.name: p.read_bytes() for p in (click_run / "adapter").iterdir() if p.is_file()}
    repo.add_commit("Upload the adapter", files)
    hub_server.repos[repo.repo_id] = repo
    hub = {"HF_ENDPOINT": hub_server.url, "HF_HUB_CACHE": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
    proc = cli(
        "peftrec.evaluate", "adapter=me/toy-click", "data=movielens_1m", "--cfg", "job", cwd=tmp_path,
        env_extra={**hub, "PEFTREC_OFFLINE": "0"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["adapter"] == "me/toy-click" and cfg["data"]["source"] == "movielens-1m"
    assert cfg["task"]["name"] == "click" and cfg["trainer"]["max_steps"] == 0
    assert any(
        r["route"] == "resolve" and r["path"].endswith("peftrec_recipe.yaml") for r in hub_server.requests
    )
