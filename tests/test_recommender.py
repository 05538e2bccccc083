"""peftrec.Recommender and `python -m peftrec.recommend` / `peftrec.export` on heads trained by real runs.

Each head is trained once by the real entry point in a subprocess (tiny random Llama, toy CSV files) and
then loaded back: the recommender must give the run's recorded test outputs for the same examples.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import toy_frames
from hub_server import GITATTRIBUTES, Repo, hub_server  # noqa: F401 - hub_server is a fixture
from omegaconf import OmegaConf
from test_cli import peftrec, toy_overrides

from peftrec.data import ExampleSplit
from peftrec.errors import PeftrecError
from peftrec.export import merge_adapter
from peftrec.recommend import write_recommendations
from peftrec.recommender import Recommender

# One trained run folder per kind, shared by this module and test_evaluate_cli.py (trained on first use).
_RUNS: dict[str, Path] = {}
N_SEQ_ITEMS = 30


def toy_files(folder: Path) -> tuple[Path, Path]:
    """The toy click/rating data of conftest.py as CSV files: Good movies rated 5, Bad ones 1."""
    interactions, items = toy_frames()
    inter, movies = folder / "ratings.csv", folder / "movies.csv"
    interactions.to_csv(inter, index=False)
    items.to_csv(movies, index=False)
    return inter, movies


def sequence_files(folder: Path) -> tuple[Path, Path]:
    """Each user watches consecutive movies (k, k+1, ... mod 30): a learnable next item."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(30):
        start = int(rng.integers(N_SEQ_ITEMS))
        for t in range(12):
            rows.append(
                {"user": f"u{u}", "movie": str((start + t) % N_SEQ_ITEMS), "stars": int(rng.integers(1, 6)),
                 "time": 1_000_000 + 100 * t + u}
            )  # fmt: skip
    inter, movies = folder / "seq.csv", folder / "seq_movies.csv"
    pd.DataFrame(rows).to_csv(inter, index=False)
    names = [f"Good Movie {k}" for k in range(N_SEQ_ITEMS)]
    pd.DataFrame({"movie": [str(k) for k in range(N_SEQ_ITEMS)], "name": names}).to_csv(movies, index=False)
    return inter, movies


RUN_SETTINGS = {
    "click": dict(recipe="lora_click", protocol="full", extra=("trainer.max_steps=10", "trainer.eval_every=10",
                  "trainer.optimizer.lr=2e-2")),
    "rating": dict(recipe="lora_rating", protocol="per_user", extra=("trainer.max_steps=6", "trainer.eval_every=6",
                   "trainer.optimizer.lr=3e-2")),
    "generative": dict(recipe="lora_generative", protocol="per_user", extra=(
        "trainer.max_steps=6", "trainer.eval_every=6", "trainer.optimizer.lr=2e-2", "trainer.max_eval_examples=4",
        "task.top_k=5", "task.num_beams=5", "task.metrics=[hit@1,hit@5,ndcg@5,mrr,valid_ratio]",
        "task.select_metric=ndcg@5")),
    "candidates": dict(recipe="lora_generative", protocol="per_user", extra=(
        "task=generative_candidates", "task.num_candidates=5", "task.metrics=[hit@1,ndcg@5,mrr,valid_ratio]",
        "task.select_metric=ndcg@5", "trainer.max_steps=4", "trainer.eval_every=4", "trainer.max_eval_examples=4",
        "trainer.optimizer.lr=2e-2")),
}  # fmt: skip


def trained_run(kind: str, tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    """The run folder of a real training run of ``kind`` (click, rating, generative), trained once."""
    if kind not in _RUNS:
        root = tmp_path_factory.mktemp(f"run-{kind}")
        csv = sequence_files(root) if kind in ("generative", "candidates") else toy_files(root)
        settings = RUN_SETTINGS[kind]
        run_dir = root / "run"
        proc = peftrec(
            *toy_overrides(
                model_dir,
                csv,
                run_dir,
                *settings["extra"],
                recipe=settings["recipe"],
                protocol=settings["protocol"],
            ),
            cwd=root,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        _RUNS[kind] = run_dir
    return _RUNS[kind]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path_factory):
    """As the CLI tests run: no network, a private peftrec cache."""
    monkeypatch.setenv("PEFTREC_OFFLINE", "1")
    monkeypatch.setenv("PEFTREC_CACHE", str(tmp_path_factory.getbasetemp() / "peftrec-cache"))


@pytest.fixture(scope="module")
def click_run(tmp_path_factory, tiny_model_dir) -> Path:
    return trained_run("click", tmp_path_factory, tiny_model_dir)


@pytest.fixture(scope="module")
def rating_run(tmp_path_factory, tiny_model_dir) -> Path:
    return trained_run("rating", tmp_path_factory, tiny_model_dir)


@pytest.fixture(scope="module")
def generative_run(tmp_path_factory, tiny_model_dir) -> Path:
    return trained_run("generative", tmp_path_factory, tiny_model_dir)


@pytest.fixture(scope="module")
def click_rec(click_run) -> Recommender:
    return Recommender.from_pretrained(click_run / "adapter", precision="fp32")


def recorded_examples(run_dir: Path, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The first ``n`` test examples of a run and its recorded predictions for them (same row order)."""
    test = ExampleSplit.load(run_dir / "split").test
    predictions = pd.read_parquet(run_dir / "predictions_test.parquet")
    return test.iloc[:n], predictions.iloc[:n]


def rated_by(csv: Path, user: str) -> set[str]:
    events = pd.read_csv(csv).astype({"movie": str, "user": str})
    return set(events.loc[events["user"] == user, "movie"])


# --- load -> identical outputs ------------------------------------------------------------------------


def test_click_scores_equal_the_runs_recorded_predictions(click_run, click_rec):
    examples, recorded = recorded_examples(click_run, 8)
    for row, expected in zip(examples.itertuples(), recorded["score"], strict=True):
        out = click_rec.recommend(
            history=list(zip(row.history_item_ids, row.history_ratings, strict=True)),
            candidates=[row.item_id],
            exclude_seen=False,  # toy users rate some movies twice: the target may be in its own history
        )
        assert out["item_id"].tolist() == [row.item_id]
        assert out["score"].iloc[0] == pytest.approx(expected, abs=1e-6)


def test_rating_predictions_equal_the_runs_recorded_predictions(rating_run):
    rec = Recommender.from_pretrained(rating_run / "adapter", precision="fp32")
    examples, recorded = recorded_examples(rating_run, 8)
    scores = [
        rec.recommend(
            history=list(zip(row.history_item_ids, row.history_ratings, strict=True)),
            candidates=[row.item_id],
            exclude_seen=False,
        )["score"].iloc[0]
        for row in examples.itertuples()
    ]
    np.testing.assert_allclose(scores, recorded["prediction"].to_numpy(), atol=1e-6)
    assert all(1.0 <= s <= 5.0 for s in scores)  # an expected rating on the 1-5 scale


def test_generative_lists_equal_the_runs_recorded_lists(generative_run):
    rec = Recommender.from_pretrained(generative_run / "adapter", precision="fp32")
    examples, recorded = recorded_examples(generative_run, 10)
    events = pd.read_csv(generative_run.parent / "seq.csv").astype({"movie": str})
    for row, expected in zip(examples.itertuples(), recorded["recommended"], strict=True):
        # The run excluded everything the user rated before the target event.
        before = events[(events["user"] == row.user_id) & (events["time"] < row.timestamp)]["movie"].tolist()
        out = rec.recommend(
            history=list(zip(row.history_item_ids, row.history_ratings, strict=True)), exclude=before, top_k=5
        )
        assert out["item_id"].tolist() == list(expected)
        assert not set(out["item_id"]) & set(before)
    # The beam search's score is the title's log-probability: scoring its items directly agrees.
    beam = rec.recommend("u3", top_k=5)
    direct = rec.recommend("u3", top_k=N_SEQ_ITEMS, candidates=beam["item_id"].tolist())
    np.testing.assert_allclose(direct["score"].to_numpy(), beam["score"].to_numpy(), atol=1e-4)
    assert (beam["score"] < 0).all() and beam["score"].is_monotonic_decreasing


def test_candidate_letters_rank_as_the_run_ranked(tmp_path_factory, tiny_model_dir):
    run_dir = trained_run("candidates", tmp_path_factory, tiny_model_dir)
    rec = Recommender.from_pretrained(run_dir / "adapter", precision="fp32")
    examples, recorded = recorded_examples(run_dir, 10)
    lists = pd.read_parquet(run_dir / "candidates" / "test.parquet")["candidate_item_ids"]
    for k, row in enumerate(examples.itertuples()):
        out = rec.recommend(
            history=list(zip(row.history_item_ids, row.history_ratings, strict=True)),
            candidates=list(lists.iloc[k]),  # the saved list, in its letter order (A = first)
            top_k=5,
            exclude_seen=False,  # the list holds the target, which the user rated
        )
        assert out["item_id"].tolist() == list(recorded["recommended"].iloc[k])
    # By default: the five most popular items the user has not rated, one lettered list.
    events = pd.read_csv(run_dir.parent / "seq.csv").astype({"movie": str})
    assert not set(rec.recommend("u1", top_k=5)["item_id"]) & set(events.loc[events["user"] == "u1", "movie"])
    with pytest.raises(PeftrecError, match="at most 5 lettered candidates"):
        rec.recommend("u1", candidates=[str(i) for i in range(N_SEQ_ITEMS)])


# --- what is recommended ------------------------------------------------------------------------------


def test_user_recommendations_are_the_unseen_items_best_first(click_run, click_rec):
    inter = click_run.parent / "ratings.csv"
    for user in ("u0", "u7"):
        seen = rated_by(inter, user)
        unseen = {str(i) for i in range(16)} - seen
        out = click_rec.recommend(user, top_k=16)
        assert set(out["item_id"]) == unseen  # every unseen item, no seen one
        assert out["rank"].tolist() == list(range(1, len(unseen) + 1))
        assert out["score"].is_monotonic_decreasing
        top = click_rec.recommend(user, top_k=2)
        pd.testing.assert_frame_equal(top, out.iloc[:2])
        assert top["title"].tolist() == [
            f"{'Good' if int(i) < 8 else 'Bad'} Movie {int(i) % 8}" for i in top["item_id"]
        ]


def test_user_history_is_their_latest_ratings(click_run, click_rec):
    events = pd.read_csv(click_run.parent / "ratings.csv").astype({"movie": str})
    last = events[events["user"] == "u5"].sort_values("time").tail(5)  # data.history_len=5 in training
    by_user = click_rec.recommend("u5", top_k=16)
    by_history = click_rec.recommend(
        history=list(zip(last["movie"], last["stars"].astype(float), strict=True)),
        exclude=events.loc[events["user"] == "u5", "movie"].tolist(),
        top_k=16,
    )
    pd.testing.assert_frame_equal(by_user, by_history)


def test_history_by_titles_equals_history_by_ids(click_rec):
    ids = [("0", 5.0), ("9", 1.0), ("3", 5.0)]
    titles = [("Good Movie 0", 5.0), ("Bad Movie 1", 1.0), ("Good Movie 3", 5.0)]
    by_ids = click_rec.recommend(history=ids, top_k=5)
    pd.testing.assert_frame_equal(by_ids, click_rec.recommend(history=titles, top_k=5))
    pd.testing.assert_frame_equal(by_ids, click_rec.recommend(history=dict(titles), top_k=5))
    assert not {"0", "9", "3"} & set(by_ids["item_id"])
    # Items without a rating count as liked (the data's top rating, 5).
    pd.testing.assert_frame_equal(
        click_rec.recommend(history=["Good Movie 0", "Good Movie 3"], top_k=5),
        click_rec.recommend(history=[("0", 5.0), ("3", 5)], top_k=5),
    )


def test_unknown_title_names_close_matches(click_rec):
    with pytest.raises(PeftrecError, match="unknown item 'Good Movie 33'") as err:
        click_rec.recommend(history=["Good Movie 33"])
    assert "Good Movie 3" in str(err.value)
    with pytest.raises(PeftrecError, match="user 'nobody' has no ratings"):
        click_rec.recommend("nobody")
    with pytest.raises(PeftrecError, match="user_id=.*or history="):
        click_rec.recommend()


def test_max_candidates_ranks_the_most_popular_unseen_items(click_run, click_rec):
    events = pd.read_csv(click_run.parent / "ratings.csv").astype({"movie": str})
    seen = rated_by(click_run.parent / "ratings.csv", "u2")
    counts = events["movie"].value_counts()
    popular_unseen = [i for i in sorted(counts.index, key=lambda i: (-counts[i], int(i))) if i not in seen][
        :2
    ]
    out = click_rec.recommend("u2", max_candidates=2, top_k=10)
    assert set(out["item_id"]) == set(popular_unseen)


def test_other_data_replaces_the_recipes_data(click_run, tmp_path):
    events = pd.read_csv(click_run.parent / "ratings.csv")
    newcomer = pd.DataFrame(
        {"user": "new", "movie": [0, 1, 2, 12], "stars": [5, 5, 5, 1], "time": [1, 2, 3, 4]}
    )  # fmt: skip
    pd.concat([events, newcomer]).to_csv(tmp_path / "more.csv", index=False)
    rec = Recommender.from_pretrained(
        click_run / "adapter", data={"interactions": str(tmp_path / "more.csv")}, precision="fp32"
    )
    out = rec.recommend("new", top_k=16)
    assert sorted(out["item_id"], key=int) == [str(i) for i in range(16) if i not in (0, 1, 2, 12)]
    assert rec.user_history("new") == (["0", "1", "2", "12"], [5.0, 5.0, 5.0, 1.0])


def test_batch_recommendations_equal_one_user_at_a_time(click_rec):
    batch = click_rec.recommend_batch(["u1", "u4"], top_k=3)
    assert batch["user_id"].tolist() == ["u1"] * 3 + ["u4"] * 3
    for user in ("u1", "u4"):
        alone = click_rec.recommend(user, top_k=3)
        mine = batch[batch["user_id"] == user].drop(columns="user_id").reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, alone)


# --- several adapters on one base ------------------------------------------------------------------------


def test_several_adapters_each_give_their_own_outputs(click_run, rating_run, click_rec):
    both = Recommender.from_pretrained(
        click_run / "adapter", extra_adapters={"rating": rating_run / "adapter"}, precision="fp32"
    )
    alone_rating = Recommender.from_pretrained(rating_run / "adapter", precision="fp32")
    assert both.adapter_names == ["default", "rating"]
    history = [("Good Movie 1", 5.0), ("Bad Movie 2", 1.0)]
    click_first = both.recommend(history=history, top_k=16)
    rating = both.recommend(history=history, top_k=16, adapter_name="rating")
    click_again = both.recommend(history=history, top_k=16)
    pd.testing.assert_frame_equal(click_first, click_rec.recommend(history=history, top_k=16), atol=1e-6)
    pd.testing.assert_frame_equal(click_again, click_first)
    pd.testing.assert_frame_equal(rating, alone_rating.recommend(history=history, top_k=16), atol=1e-6)
    assert rating["score"].between(1, 5).all() and click_first["score"].between(0, 1).all()
    with pytest.raises(PeftrecError, match="no adapter named 'nope'"):
        both.recommend(history=history, adapter_name="nope")


def saved_untrained_head(tiny_model_dir: Path, recipe_run: Path, folder: Path, config: object) -> Path:
    """A head saved by the runner's save_head (with a run's recipe), not trained: for shape-only checks."""
    from transformers import AutoModelForCausalLM

    from peftrec.methods import apply_head, save_head

    model = apply_head(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config)
    return save_head(model, folder, recipe=(recipe_run / "adapter" / "peftrec_recipe.yaml").read_text())


def test_bottleneck_adapter_cannot_share_the_base(click_run, tiny_model_dir, tmp_path):
    from peftrec.methods.bottleneck import BottleneckConfig

    bottleneck = saved_untrained_head(tiny_model_dir, click_run, tmp_path / "b", BottleneckConfig())
    with pytest.raises(PeftrecError, match="bottleneck adapter .* cannot share a base model"):
        Recommender.from_pretrained(click_run / "adapter", extra_adapters={"b": bottleneck})
    # Alone it loads and recommends.
    assert len(Recommender.from_pretrained(bottleneck, precision="fp32").recommend("u0", top_k=3)) == 3


# --- merged export -----------------------------------------------------------------------------------


def test_merged_export_reproduces_the_unmerged_scores(click_run, click_rec, tmp_path):
    folder = click_rec.merge_and_export(tmp_path / "merged")
    assert {"config.json", "model.safetensors", "tokenizer.json", "peftrec_recipe.yaml"} <= {
        p.name for p in folder.iterdir()
    }
    assert not (folder / "adapter_config.json").exists()
    merged = Recommender.from_pretrained(folder, precision="fp32")
    for user in ("u0", "u3"):
        expected = click_rec.recommend(user, top_k=16)
        actual = merged.recommend(user, top_k=16)
        # Same items; their scores agree to float rounding of W + BA.
        pd.testing.assert_frame_equal(
            actual.sort_values("item_id").reset_index(drop=True)[["item_id", "score"]],
            expected.sort_values("item_id").reset_index(drop=True)[["item_id", "score"]],
            atol=1e-4,
        )
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    assert not any("lora" in name for name, _ in model.named_parameters())


def test_prefix_tuning_head_is_refused_by_export(click_run, tiny_model_dir, tmp_path):
    from peft import PrefixTuningConfig

    prefix = saved_untrained_head(
        tiny_model_dir,
        click_run,
        tmp_path / "p",
        PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
    )
    with pytest.raises(PeftrecError, match="prefix_tuning head cannot be merged"):
        merge_adapter(prefix, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- command line ------------------------------------------------------------------------------------


def cli(module: str, *args: str, cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PEFTREC_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "PEFTREC_CACHE": str(cwd / "cache")}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_recommend_cli_writes_top_k_rows_per_user(click_run, click_rec, tmp_path):
    inter = click_run.parent / "ratings.csv"
    # Toy users have rated most of the 16 movies: take users with at least top_k=2 unseen ones.
    users = [u for u in (f"u{k}" for k in range(40)) if 16 - len(rated_by(inter, u)) >= 2][:3]
    (tmp_path / "users.txt").write_text(f"{users[0]}\n# a comment\n\n{users[1]}\n{users[2]}\n")
    out = tmp_path / "recs.csv"
    proc = cli(
        "peftrec.recommend", f"adapter={click_run / 'adapter'}", "users_file=users.txt", f"output={out}",
        "top_k=2", "precision=fp32", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Wrote 6 recommendations for 3 users to {out}" in proc.stdout
    rows = pd.read_csv(out, dtype={"item_id": str})
    assert rows.columns.tolist() == ["user_id", "rank", "item_id", "title", "score"]
    assert rows["user_id"].tolist() == [u for u in users for _ in range(2)]
    assert rows["rank"].tolist() == [1, 2] * 3
    expected = click_rec.recommend_batch(users, top_k=2)
    assert rows["item_id"].tolist() == expected["item_id"].tolist()
    np.testing.assert_allclose(rows["score"], expected["score"], atol=1e-6)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".recs")] == []  # no temporary file left

    # JSONL: the same rows, one JSON object each.
    jsonl = write_recommendations(click_rec.iter_recommendations(users, top_k=2), tmp_path / "recs.jsonl")
    records = [json.loads(line) for line in (tmp_path / "recs.jsonl").read_text().splitlines()]
    assert jsonl == 6 and pd.DataFrame(records).drop(columns="score").equals(rows.drop(columns="score"))
    with pytest.raises(PeftrecError, match="use a .csv or .jsonl file name"):
        write_recommendations([], tmp_path / "recs.parquet")


def test_recommend_cli_takes_a_hub_repo_id_and_prints_a_table(click_run, click_rec, hub_server, tmp_path):  # noqa: F811
    repo = Repo("me/toy-click", private=False)
    repo.add_commit("initial commit", {".gitattributes": GITATTRIBUTES})
    repo.add_commit(
        "Upload", {p.name: p.read_bytes() for p in (click_run / "adapter").iterdir() if p.is_file()}
    )
    hub_server.repos[repo.repo_id] = repo
    hub = {"HF_ENDPOINT": hub_server.url, "HF_HUB_CACHE": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
    proc = cli(
        "peftrec.recommend", "adapter=me/toy-click", 'history=["Good Movie 1", "Bad Movie 2"]', "top_k=3",
        "precision=fp32", cwd=tmp_path, env_extra={**hub, "PEFTREC_OFFLINE": "0"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-6] == "Top 3 for the given history (click task, me/toy-click):"
    assert lines[-5:-3] == ["| rank | item_id | title | score |", "|---|---|---|---|"]
    expected = click_rec.recommend(history=["Good Movie 1", "Bad Movie 2"], top_k=3)
    assert [line.split(" | ")[1] for line in lines[-3:]] == expected["item_id"].tolist()
    bad = cli("peftrec.recommend", "adapter=me/toy-click", "users=u1", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown option 'users'" in bad.stderr and "Traceback" not in bad.stderr


def test_export_cli_writes_a_loadable_merged_model(click_run, tmp_path):
    proc = cli("peftrec.export", f"adapter={click_run}", f"output_dir={tmp_path / 'm'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Merged model: {tmp_path / 'm'}" in proc.stdout
    recipe = OmegaConf.load(tmp_path / "m" / "peftrec_recipe.yaml")
    assert recipe.task.name == "click"
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["use_cache"] is True and config["dtype"] == "float32"  # exact merge by default


def test_import_peftrec_stays_light():
    import peftrec

    assert peftrec.Recommender is Recommender  # exported lazily, by a module __getattr__
    code = "import sys, peftrec; assert 'torch' not in sys.modules and 'Recommender' in peftrec.__all__"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
