"""`python -m peftrec.publish`: a real run folder -> Hub folder + model card -> a local Hub over HTTP.

The run folders come from the real CLI on the tiny model; the uploads are huggingface_hub's own code
talking to tests/hub_server.py (no mocks), so what arrives is what the Hub would receive.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import toy_frames
from huggingface_hub import ModelCard, constants, snapshot_download
from test_cli import REPO, peftrec, toy_overrides

from peftrec.errors import PeftrecError
from peftrec.model_card import base_model_license, hub_base_model
from peftrec.publish import main, publish

# The fixture `hub_server` (a fresh local Hub per test) lives in tests/hub_server.py.
pytest_plugins = ["hub_server"]

TOKEN = "hf_peftrecTestToken0123456789abcdefXYZ"
BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"
UPLOADED = {
    "README.md",
    "adapter_config.json",
    "adapter_model.safetensors",
    "peftrec_recipe.yaml",
    "config.yaml",
    "result.json",
}


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """Three real run folders on the tiny model: LoRA, the bottleneck Adapter, and zero-shot."""
    root = tmp_path_factory.mktemp("publish-runs")
    interactions, items = toy_frames()
    csv = (root / "ratings.csv", root / "movies.csv")
    interactions.to_csv(csv[0], index=False)
    items.to_csv(csv[1], index=False)
    few_steps = ["trainer.max_steps=4", "trainer.eval_every=2"]
    extras = {
        "lora": few_steps,
        "adapter": [*few_steps, "peft=adapter"],
        "zero_shot": ["trainer.max_steps=0"],
    }
    for name, extra in extras.items():
        proc = peftrec(*toy_overrides(tiny_model_dir, csv, root / name, *extra), cwd=root)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return {name: root / name for name in extras}


@pytest.fixture
def token_env(monkeypatch, tmp_path):
    """HF_TOKEN set; no saved login (the machine's own token file, if any, is out of reach)."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))
    return TOKEN


@pytest.fixture
def no_token_env(monkeypatch, tmp_path):
    """Neither HF_TOKEN nor a saved login."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))


@pytest.fixture
def hub_logs(caplog):
    """Capture every log record, huggingface_hub's included (its loggers do not propagate)."""
    hub_logger = logging.getLogger("huggingface_hub")
    hub_logger.addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG)
    yield caplog
    hub_logger.removeHandler(caplog.handler)


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def arrived(hub_server, repo_id: str) -> dict[str, bytes]:
    """The repo's files on the server, less the .gitattributes every new Hub repo starts with."""
    return {k: v for k, v in hub_server.repos[repo_id].files.items() if k != ".gitattributes"}


def test_lora_run_uploads_its_folder_and_a_real_card(
    runs, hub_server, token_env, monkeypatch, capfd, hub_logs, tmp_path, tiny_model_dir
):
    run = runs["lora"]
    result = json.loads((run / "result.json").read_text())
    out = tmp_path / "hub"
    # HF_ENDPOINT set after huggingface_hub was imported: publish must read it when it runs.
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    main([f"run_dir={run}", "repo_id=me/lora-click", f"output_dir={out}", f"base_model={BASE}"])
    printed = capfd.readouterr()

    built = files_of(out)
    assert set(built) == UPLOADED
    assert arrived(hub_server, "me/lora-click") == built  # byte for byte
    adapter = run / "adapter"
    assert built["adapter_model.safetensors"] == (adapter / "adapter_model.safetensors").read_bytes()
    for name in ("config.yaml", "result.json"):
        assert built[name] == (run / name).read_bytes()
    # The run saved its local base path; the repo names the base model by its Hub id, nothing else changed.
    saved, shipped = (
        json.loads((adapter / "adapter_config.json").read_text()),
        json.loads(built["adapter_config.json"]),
    )
    assert saved["base_model_name_or_path"] != BASE and shipped["base_model_name_or_path"] == BASE
    assert {k: v for k, v in shipped.items() if k != "base_model_name_or_path"} == {
        k: v for k, v in saved.items() if k != "base_model_name_or_path"
    }

    # ... and so does the shipped recipe: peftrec rebuilds the head from it on machines without that folder.
    saved_recipe = yaml.safe_load((adapter / "peftrec_recipe.yaml").read_text())
    shipped_recipe = yaml.safe_load(built["peftrec_recipe.yaml"])
    assert saved_recipe["model"]["name"] == str(tiny_model_dir) and shipped_recipe["model"]["name"] == BASE
    saved_recipe["model"]["name"] = BASE
    assert shipped_recipe == saved_recipe

    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == BASE and card.data.library_name == "peft"
    assert card.data.pipeline_tag == "text-generation" and card.data.license == "apache-2.0"
    assert {"recommendation", "peftrec", "lora", "click"} <= set(card.data.tags)
    assert card.data.model_name == "lora-click"
    tested = {e.metric_type: e.metric_value for e in card.data.eval_results if e.dataset_split == "test"}
    assert tested == result["metrics"]["test"] and len(tested) == 3
    first = card.data.eval_results[0]
    assert first.dataset_revision == result["split"]["fingerprint"] and first.dataset_config == "full"
    assert first.dataset_args["test_users"] == result["users"]["test"] == 40
    body = card.text
    assert 'peftrec.Recommender.from_pretrained("me/lora-click")' in body
    assert "python -m peftrec.evaluate adapter=me/lora-click" in body
    assert "python -m peftrec.recommend adapter=me/lora-click user=" in body
    assert f'AutoModelForCausalLM.from_pretrained("{BASE}")' in body
    assert 'PeftModel.from_pretrained(base, "me/lora-click")' in body
    assert result["config"]["task"]["template"] in body and "`No`, `Yes` (negative, positive)" in body
    assert result["split"]["fingerprint"] in body
    low, high = result["metrics"]["test_ci95_by_user"]["auc"]
    assert f"[{low:.4f}, {high:.4f}]" in body
    for baseline, values in result["baselines_test"].items():
        assert f"| baseline: {baseline} | {values['auc']:.4f} |" in body
    assert f"{result['params']['trainable']:,} of {result['params']['total']:,}" in body
    assert result["git"]["commit"] in body and f"peftrec {result['versions']['peftrec']}" in body
    # The Hub was asked to validate exactly this card before the commit.
    assert hub_server.validated == [built["README.md"].decode()]

    # Not asked to be private: create_repo leaves the visibility to the owner's default.
    create = json.loads(next(r["body"] for r in hub_server.requests if r["route"] == "create_repo"))
    assert create == {"name": "lora-click", "organization": "me", "type": "model"}
    assert hub_server.repos["me/lora-click"].private is False
    commits = hub_server.repos["me/lora-click"].commits
    assert (
        commits[-1].summary
        == f"Upload lora click head (test auc {result['metrics']['test']['auc']:.4f}) from peftrec run lora"
    )
    # The token went to every write call, and nowhere else: not the folder, the output or the logs.
    for route in ("create_repo", "preupload", "commit"):
        assert hub_server.authorizations(route) == [f"Bearer {TOKEN}"]
    assert all(TOKEN.encode() not in data for data in built.values())
    assert TOKEN not in printed.out + printed.err + hub_logs.text
    assert "Uploaded 6 files to" in printed.out and "README.md" in printed.out


def test_private_repo_is_created_private_and_its_adapter_loads_by_hub_id(
    runs, hub_server, token_env, tmp_path, tiny_model_dir
):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    published = publish(
        runs["lora"], "me/private-lora", private=True, output_dir=tmp_path / "hub", endpoint=hub_server.url
    )
    assert published.url == f"{hub_server.url}/me/private-lora"
    create = json.loads(next(r["body"] for r in hub_server.requests if r["route"] == "create_repo"))
    assert create["visibility"] == "private" and hub_server.repos["me/private-lora"].private

    hub_server.tokens = {TOKEN}  # from now on the private repo needs the token, as on the Hub
    folder = Path(
        snapshot_download(
            "me/private-lora", endpoint=hub_server.url, token=TOKEN, cache_dir=tmp_path / "cache"
        )
    )
    assert files_of(folder) == hub_server.repos["me/private-lora"].files
    with pytest.raises(Exception, match="Repository Not Found"):
        snapshot_download(
            "me/private-lora", endpoint=hub_server.url, token=False, cache_dir=tmp_path / "cache2"
        )

    # Downloaded by Hub id, the head computes what the run's own adapter folder computes.
    ids = torch.tensor([[5, 17, 42, 7]])
    with torch.no_grad():
        from_hub = (
            PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), folder)
            .eval()(ids)
            .logits
        )
        from_run = (
            PeftModel.from_pretrained(
                AutoModelForCausalLM.from_pretrained(tiny_model_dir), runs["lora"] / "adapter"
            )
            .eval()(ids)
            .logits
        )
    torch.testing.assert_close(from_hub, from_run, rtol=0, atol=0)


def test_bottleneck_adapter_run_publishes_its_own_format(
    runs, hub_server, token_env, tmp_path, tiny_model_dir
):
    import torch
    from transformers import AutoModelForCausalLM

    from peftrec.methods.apply import load_head

    run = runs["adapter"]
    publish(run, "me/adapter-click", output_dir=tmp_path / "hub", endpoint=hub_server.url, base_model=BASE)
    files = arrived(hub_server, "me/adapter-click")
    assert set(files) == UPLOADED
    assert files["adapter_model.safetensors"] == (run / "adapter" / "adapter_model.safetensors").read_bytes()
    config = json.loads(files["adapter_config.json"])
    assert config["peft_type"] == "BOTTLENECK" and config["base_model_name_or_path"] == BASE
    card = ModelCard(files["README.md"].decode())
    assert {"adapter", "bottleneck-adapter", "click"} <= set(card.data.tags)
    assert "bottleneck Adapter" in card.text and "PeftModel.from_pretrained" in card.text
    assert "from peft import" not in card.text  # peft cannot load it: no snippet that would fail

    folder = Path(
        snapshot_download("me/adapter-click", endpoint=hub_server.url, cache_dir=tmp_path / "cache")
    )
    ids = torch.tensor([[5, 17, 42, 7]])
    with torch.no_grad():
        from_hub = load_head(AutoModelForCausalLM.from_pretrained(tiny_model_dir), folder)(ids).logits
        from_run = load_head(AutoModelForCausalLM.from_pretrained(tiny_model_dir), run / "adapter")(
            ids
        ).logits
    torch.testing.assert_close(from_hub, from_run, rtol=0, atol=0)


def test_dry_run_builds_and_lists_the_folder_without_token_or_network(
    runs, hub_server, no_token_env, monkeypatch, capsys, tmp_path
):
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    out = tmp_path / "hub"
    main([f"run_dir={runs['lora']}", "repo_id=me/lora-click", "dry_run=true", f"output_dir={out}"])
    printed = capsys.readouterr().out
    assert set(files_of(out)) == UPLOADED
    # No base model to point at: the head's files are the run's, unchanged.
    for name in ("adapter_config.json", "adapter_model.safetensors", "peftrec_recipe.yaml"):
        assert (out / name).read_bytes() == (runs["lora"] / "adapter" / name).read_bytes()
    for name, data in files_of(out).items():
        assert f"{name}" in printed and f"{len(data):,} bytes" in printed
    assert "Dry run: nothing uploaded (6 files would go to me/lora-click)" in printed
    assert hub_server.requests == []
    # The tiny model is a local folder: no base_model is claimed (and the card says so).
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model is None and card.data.license is None
    assert "local model folder" in card.text


def test_default_output_is_the_run_folders_hub_and_a_rebuild_replaces_it(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["lora"], run)
    first = publish(run, "me/lora-click", dry_run=True)
    assert first.folder == run / "hub" and first.url is None
    (run / "hub" / "stale.txt").write_text("from an earlier build")
    second = publish(run, "me/other-name", dry_run=True)
    assert set(files_of(second.folder)) == UPLOADED  # the earlier build was replaced, not merged
    assert 'Recommender.from_pretrained("me/other-name")' in (second.folder / "README.md").read_text()
    assert not [p for p in run.iterdir() if p.name.startswith(".hub")]  # no staging folder left behind


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("foreign", "exists and is not a folder built by peftrec.publish"),
        ("run", "would replace the run folder or its adapter"),
        ("adapter", "would replace the run folder or its adapter"),
    ],
)
def test_output_dir_never_replaces_what_publish_did_not_build(runs, tmp_path, output, expected):
    run = tmp_path / "run"
    shutil.copytree(runs["lora"], run)
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep me")
    target = {"foreign": foreign, "run": run, "adapter": run / "adapter"}[output]
    with pytest.raises(PeftrecError, match=expected):
        publish(run, "me/lora-click", dry_run=True, output_dir=target)
    assert (foreign / "mine.txt").read_text() == "keep me" and (
        run / "adapter" / "adapter_config.json"
    ).is_file()


def test_missing_token_is_named_and_nothing_is_sent(
    runs, hub_server, no_token_env, monkeypatch, capsys, tmp_path
):
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    with pytest.raises(SystemExit) as exit_info:
        main([f"run_dir={runs['lora']}", "repo_id=me/lora-click", f"output_dir={tmp_path / 'hub'}"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("peftrec: error: no Hugging Face token")
    assert "hf auth login" in err and "huggingface-cli login" in err and "HF_TOKEN" in err
    assert hub_server.requests == [] and not (tmp_path / "hub").exists()


def test_a_refused_token_is_named_without_showing_it(runs, hub_server, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub_server.tokens = {"hf_the_only_valid_one"}
    with pytest.raises(PeftrecError) as err:
        publish(runs["lora"], "me/lora-click", output_dir=tmp_path / "hub", endpoint=hub_server.url)
    assert "refused the token (401" in str(err.value) and "hf auth login" in str(err.value)
    assert TOKEN not in str(err.value) and "me/lora-click" not in hub_server.repos


def test_an_unreachable_hub_is_named(runs, token_env, tmp_path):
    with pytest.raises(PeftrecError, match="cannot reach the Hub at http://127.0.0.1:9 "):
        publish(runs["lora"], "me/lora-click", output_dir=tmp_path / "hub", endpoint="http://127.0.0.1:9")


def test_offline_mode_is_named(runs, token_env, monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PeftrecError, match="HF_HUB_OFFLINE .* is set, so huggingface_hub makes no request"):
        publish(runs["lora"], "me/lora-click", output_dir=tmp_path / "hub", endpoint="http://127.0.0.1:9")


def _failed_run(runs, tmp_path) -> Path:
    """The lora run as run.py records a run that crashed after saving a head (status failed)."""
    run = tmp_path / "failed"
    shutil.copytree(runs["lora"], run)
    result = json.loads((run / "result.json").read_text())
    failure = {k: result[k] for k in ("recipe", "task", "method", "model", "data", "seed", "config")}
    (run / "result.json").write_text(
        json.dumps({"status": "failed", "error": "CUDA out of memory", **failure})
    )
    return run


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "does not exist: pass the folder a run printed as its last line"),
        ("not_a_run", "is not a peftrec run folder (no result.json)"),
        ("adapter_folder", "this is an adapter folder: pass its run folder, run_dir="),
        (
            "zero_shot",
            "has no adapter (no adapter/adapter_config.json): a zero-shot run (trainer.max_steps=0)",
        ),
        ("failed", "did not complete (result.json status 'failed': CUDA out of memory)"),
        ("no_owner", "repo_id='lora-click' is not a Hub repo id of the form owner/name"),
        ("bad_name", "repo_id='me/lora--click' is not a valid Hub repo id"),
        ("no_equals", "argument 'outputs/x' is not key=value: e.g. run_dir=outputs/x"),
        ("unknown_key", "unknown option 'privat': the options are"),
        ("bad_bool", "private='maybe': give private=true or private=false"),
        ("no_repo", "repo_id= is required"),
    ],
)
def test_bad_input_exits_2_with_a_message_naming_the_fix(
    runs, hub_server, token_env, capsys, tmp_path, case, expected
):
    lora = runs["lora"]
    arguments = {
        "missing": lambda: [f"run_dir={tmp_path / 'nope'}", "repo_id=me/x"],
        "not_a_run": lambda: [f"run_dir={tmp_path}", "repo_id=me/x"],
        "adapter_folder": lambda: [f"run_dir={lora / 'adapter'}", "repo_id=me/x"],
        "zero_shot": lambda: [f"run_dir={runs['zero_shot']}", "repo_id=me/x"],
        "failed": lambda: [f"run_dir={_failed_run(runs, tmp_path)}", "repo_id=me/x"],
        "no_owner": lambda: [f"run_dir={lora}", "repo_id=lora-click"],
        "bad_name": lambda: [f"run_dir={lora}", "repo_id=me/lora--click"],
        "no_equals": lambda: ["outputs/x"],
        "unknown_key": lambda: [f"run_dir={lora}", "repo_id=me/x", "privat=true"],
        "bad_bool": lambda: [f"run_dir={lora}", "repo_id=me/x", "private=maybe"],
        "no_repo": lambda: [f"run_dir={lora}", f"endpoint={hub_server.url}"],
    }
    argv = arguments[case]()
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, f"endpoint={hub_server.url}"] if case not in ("no_equals", "no_repo") else argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("peftrec: error: ") and expected in err, err
    assert "Traceback" not in err
    assert hub_server.requests == []


def test_card_names_the_base_model_by_hub_id():
    assert hub_base_model("smollm2-135m-instruct") == BASE
    assert hub_base_model("HuggingFaceTB/smollm2-135m-instruct") == BASE  # registry match is case-blind
    assert hub_base_model("google/gemma-3-270m") == "google/gemma-3-270m"
    assert hub_base_model("someone/their-model") == "someone/their-model"
    assert base_model_license(BASE) == "apache-2.0" and base_model_license("google/gemma-3-270m") == "gemma"
    assert base_model_license("someone/their-model") is None


def test_a_hugging_face_cache_folder_names_its_repo(tmp_path):
    snapshot = tmp_path / "hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    assert hub_base_model(str(snapshot)) == BASE
    plain = tmp_path / "my-model"
    plain.mkdir()
    assert hub_base_model(str(plain)) is None


def test_the_command_line_entry_uploads_with_hf_endpoint_and_hf_token(runs, hub_server, tmp_path):
    env = {
        **os.environ,
        "HF_ENDPOINT": hub_server.url,
        "HF_TOKEN": TOKEN,
        "HF_HOME": str(tmp_path / "hf-home"),
    }
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGING_FACE_HUB_TOKEN"):
        env.pop(name, None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "peftrec.publish",
            f"run_dir={runs['adapter']}",
            "repo_id=me/cli-adapter",
            "private=true",
            f"output_dir={tmp_path / 'hub'}",
            "commit_message=fix: first version",  # a colon: read as text, not as YAML
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Uploaded 6 files to {hub_server.url}/me/cli-adapter" in proc.stdout
    repo = hub_server.repos["me/cli-adapter"]
    assert repo.private and repo.commits[-1].summary == "fix: first version"
    assert arrived(hub_server, "me/cli-adapter") == files_of(tmp_path / "hub")
    assert TOKEN not in proc.stdout + proc.stderr


def test_help_prints_usage():
    proc = subprocess.run(
        [sys.executable, "-m", "peftrec.publish", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: python -m peftrec.publish run_dir=RUN_FOLDER repo_id=OWNER/NAME")
    for option in (
        "private=true",
        "dry_run=true",
        "output_dir=",
        "commit_message=",
        "base_model=",
        "endpoint=",
    ):
        assert option in proc.stdout


@pytest.mark.parametrize(
    ("overrides", "answer"),
    [
        (["task=click", "peft=adapter"], "`No`, `Yes` (negative, positive)"),
        (["task=rating", "model=gemma_3_270m"], "`1`, `2`, `3`, `4`, `5`"),
        (["task=generative", "data.cold_start=users"], "the target item's title, then end of sequence"),
        (["task=generative_candidates", "data.protocol=random"], "the candidate letters A..T"),
    ],
    ids=["click-adapter", "rating-gemma", "generative-cold", "candidates-random"],
)
def test_every_task_gets_a_card_with_its_metrics_prompt_and_base_model(runs, overrides, answer):
    """Cards for the shipped configs composed by Hydra, on the record of the real LoRA run."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from peftrec.__main__ import register_recipes
    from peftrec.assets import MODELS
    from peftrec.model_card import build_card
    from peftrec.paths import CONF_DIR

    register_recipes()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        config = OmegaConf.to_container(compose(config_name="config", overrides=overrides), resolve=True)
    config.pop("hydra", None)
    names = config["task"]["metrics"]
    bottleneck = "peft=adapter" in overrides
    result = json.loads((runs["lora"] / "result.json").read_text())
    test = {name: 0.5 + i / 100 for i, name in enumerate(names)}
    result.update(
        config=config,
        task=config["task"]["name"],
        method="adapter" if bottleneck else "lora",
        head={"peft_type": "BOTTLENECK" if bottleneck else "LORA"},
        select_metric=config["task"]["select_metric"],
        metrics={
            "validation": {name: v - 0.1 for name, v in test.items()},
            "test": test,
            "test_ci95_by_user": {name: [v - 0.05, v + 0.05] for name, v in test.items()},
            **(
                {
                    "test_warm": {"examples": 60, "users": 32, **test},
                    "test_cold": {"examples": 16, "users": 8, **test},
                }
                if config["data"]["cold_start"]
                else {}
            ),
        },
        baselines_test={"popularity": {names[0]: 0.25}},
    )
    base = hub_base_model(config["model"]["name"])
    assert base == MODELS[config["model"]["name"]].hub_id

    card = ModelCard(str(build_card(result, repo_id="me/card", base_model=base, files=[("result.json", 10)])))
    assert card.data.base_model == base and card.data.license == base_model_license(base) is not None
    assert card.data.datasets == ["movielens-100k"] and result["task"] in card.data.tags
    assert {e.metric_type: e.metric_value for e in card.data.eval_results} == test
    assert {e.dataset_config for e in card.data.eval_results} == {config["data"]["protocol"]}
    assert config["task"]["template"] in card.text and answer in card.text
    assert f"| baseline: popularity | {0.25:.4f} |" in card.text
    assert ("| test, warm (60 rows) |" in card.text) == bool(config["data"]["cold_start"])
    assert ("from peft import" in card.text) is not bottleneck
    assert ("peftrec's own **bottleneck Adapter**" in card.text) is bottleneck
    assert "MovieLens is for research use" in card.text
