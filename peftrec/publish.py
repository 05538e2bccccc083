"""Share a run's head on the Hugging Face Hub: ``python -m peftrec.publish run_dir=... repo_id=owner/name``.

Builds a Hub-ready folder from a run folder (the head's files, ``peftrec_recipe.yaml``, the resolved
``config.yaml``, ``result.json`` and a model card written by :mod:`peftrec.model_card`), then creates the
repo and uploads the folder in one commit with ``HfApi.create_repo`` + ``HfApi.upload_folder``.
Not ``PeftModel.push_to_hub``: it replaces the card with peft's generic one.

The endpoint is ``endpoint=``, else ``HF_ENDPOINT`` as set when the command runs (huggingface_hub reads
it once, at import), else the public Hub. The token is ``HF_TOKEN`` or the one ``hf auth login`` saved;
it is handed to huggingface_hub only, never written to the folder or logged.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftrec.atomic import swap_in
from peftrec.errors import PeftrecError
from peftrec.model_card import build_card, hub_base_model
from peftrec.paths import RECIPE_FILE

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
CARD = "README.md"  # peft writes a generic one into adapter/; ours replaces it
HUB_FOLDER = "hub"  # the default output folder, inside the run folder
# The run-level files that travel with the head (the head's own files come from adapter/).
RUN_FILES = ("config.yaml", "result.json")

USAGE = """\
usage: python -m peftrec.publish run_dir=RUN_FOLDER repo_id=OWNER/NAME [key=value ...]

Build a Hub-ready folder from a peftrec run (the trained head, its recipe, the resolved config, the
run record and a model card) and upload it to the Hugging Face Hub.

  run_dir=PATH         the run folder `python -m peftrec` printed ("Run folder: ...")     (required)
  repo_id=OWNER/NAME   the Hub model repo to create or update                           (required)
  private=true         create the repo private (an existing repo keeps its visibility)   [false]
  dry_run=true         build the folder and list what would upload; no token, no network [false]
  output_dir=PATH      where to build the folder (replaced if it is an earlier build)    [RUN_FOLDER/hub]
  commit_message=TEXT  the commit's summary                                              [generated]
  base_model=ID        the base model's Hub id, when the run used a local model folder   [from the run]
  endpoint=URL         the Hub to upload to                                             [$HF_ENDPOINT or huggingface.co]

Token: $HF_TOKEN, else the token saved by `hf auth login` (`huggingface-cli login`); it needs write access.
"""

_BOOL_OPTIONS = ("private", "dry_run")
_TEXT_OPTIONS = ("run_dir", "repo_id", "output_dir", "commit_message", "base_model", "endpoint")
_TRUE, _FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}


@dataclass(frozen=True)
class Published:
    """What :func:`publish` did.

    Attributes:
        folder: the built Hub folder.
        files: ``(path in the repo, bytes)`` of every file in it, sorted.
        url: the repo's URL on the Hub; None for a dry run.
        commit: the commit's URL; None for a dry run.
    """

    folder: Path
    files: list[tuple[str, int]]
    url: str | None = None
    commit: str | None = None


def publish(
    run_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    dry_run: bool = False,
    output_dir: str | Path | None = None,
    commit_message: str | None = None,
    base_model: str | None = None,
    endpoint: str | None = None,
) -> Published:
    """Build the Hub folder of a run and upload it (unless ``dry_run``).

    Args:
        run_dir: a completed run folder with an ``adapter/``.
        repo_id: the Hub model repo, ``owner/name``.
        private: create the repo private (the Hub ignores it for an existing repo).
        dry_run: only build the folder; needs no token and no network.
        output_dir: where to build the folder (default ``<run_dir>/hub``); an earlier build there is replaced.
        commit_message: the commit summary (default: names the head, task and test metric).
        base_model: the base model's Hub id; by default read from the run's ``model.name``.
        endpoint: the Hub's URL; by default ``HF_ENDPOINT``, else the public Hub.

    Returns:
        The folder, its files and, after an upload, the repo and commit URLs.

    Raises:
        PeftrecError: a bad repo id or run folder (missing, not a run, failed, zero-shot), no token, or
            the Hub refused or could not be reached. The message names the fix.
    """
    repo_id = check_repo_id(repo_id)
    run_dir = Path(run_dir).expanduser().resolve()
    result = load_run(run_dir)
    if base_model is not None:
        base_model = check_repo_id(base_model, what="base_model")
    else:
        base_model = hub_base_model(str(result["config"]["model"]["name"]))
        if base_model is None:
            log.warning(
                "model.name=%s is a local folder that names no Hub repo: the card has no base_model. "
                "Pass base_model=OWNER/NAME (the Hub id of those weights) to set it",
                result["config"]["model"]["name"],
            )
    # Checked before building: a missing token should not cost a build, nor leave a folder behind.
    token = None if dry_run else hub_token()
    folder = build_folder(run_dir, repo_id, result=result, base_model=base_model, output_dir=output_dir)
    files = folder_files(folder)
    if dry_run:
        return Published(folder, files)
    message = commit_message or default_commit_message(result, run_dir)
    url, commit = upload(
        folder, repo_id, token=token, endpoint=hub_endpoint(endpoint), private=private, commit_message=message
    )
    return Published(folder, files, url=url, commit=commit)


def check_repo_id(repo_id: object, *, what: str = "repo_id") -> str:
    """Check a Hub repo id: ``owner/name`` and valid by huggingface_hub's rules.

    Args:
        repo_id: the value given.
        what: the option's name, for the message.

    Returns:
        The id.

    Raises:
        PeftrecError: it is missing, lacks the owner, or has characters the Hub refuses.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    text = "" if repo_id is None else str(repo_id)
    if text.count("/") != 1 or not all(text.split("/")):
        raise PeftrecError(
            f"{what}={text!r} is not a Hub repo id of the form owner/name: pass e.g. {what}=your-name/"
            "peftrec-lora-click (owner: your Hub user or an organization you can write to)"
        )
    try:
        validate_repo_id(text)
    except HFValidationError as err:
        raise PeftrecError(
            f"{what}={text!r} is not a valid Hub repo id: {err} Use letters, digits, '-', '_' and '.' "
            "(at most 96 characters, no '--' or '..', not starting or ending with '-' or '.')"
        ) from err
    return text


def load_run(run_dir: Path) -> dict[str, Any]:
    """Read a run folder's ``result.json`` and check that the run has a head to publish.

    Args:
        run_dir: the run folder.

    Returns:
        The run record.

    Raises:
        PeftrecError: no such folder, no ``result.json``, a run that did not complete, or no adapter.
    """
    hint = "pass the folder a run printed as its last line (Run folder: outputs/<recipe>/<time>)"
    if not run_dir.exists():
        raise PeftrecError(f"run_dir {run_dir} does not exist: {hint}")
    if not run_dir.is_dir():
        raise PeftrecError(f"run_dir {run_dir} is a file, not a run folder: {hint}")
    record = run_dir / "result.json"
    if not record.is_file():
        if (run_dir / ADAPTER_CONFIG).is_file():
            hint = f"this is an adapter folder: pass its run folder, run_dir={run_dir.parent}"
        raise PeftrecError(
            f"{run_dir} is not a peftrec run folder (no result.json): {hint}. A run that stopped before "
            "its end writes no result.json: run it again"
        )
    try:
        result = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise PeftrecError(f"{record} cannot be read as JSON ({err}): run the recipe again") from err
    status = result.get("status")
    if status != "completed":
        reason = f": {result['error']}" if result.get("error") else ""
        raise PeftrecError(
            f"the run in {run_dir} did not complete (result.json status {status!r}{reason}): its numbers are "
            "not final, so it is not published. Publish a completed run, or run the recipe again"
        )
    if result.get("method") == "baselines":
        raise PeftrecError(
            f"{run_dir} is a baselines-only run: it trained no head, so there is nothing to publish. "
            "Publish a run of a head recipe (e.g. recipe=lora_click)"
        )
    adapter = run_dir / "adapter"
    if not (adapter / ADAPTER_CONFIG).is_file():
        raise PeftrecError(
            f"the run in {run_dir} has no adapter (no adapter/{ADAPTER_CONFIG}): a zero-shot run "
            "(trainer.max_steps=0) trains no head, so there is nothing to publish. Train one, e.g. "
            f"python -m peftrec recipe={result.get('recipe') or 'lora_click'} trainer.max_steps=48, "
            "and publish that run"
        )
    if not any(adapter.glob("*.safetensors")):
        raise PeftrecError(
            f"{adapter} holds no weights (*.safetensors): the run was interrupted while saving its head. "
            "Run the recipe again"
        )
    for name in RUN_FILES:
        if not (run_dir / name).is_file():
            raise PeftrecError(f"{run_dir} has no {name}: the run folder is incomplete; run the recipe again")
    return result


def build_folder(
    run_dir: Path,
    repo_id: str,
    *,
    result: dict[str, Any],
    base_model: str | None,
    output_dir: str | Path | None = None,
) -> Path:
    """Write the Hub folder atomically: built beside its destination, then swapped in.

    Args:
        run_dir: the run folder (checked by :func:`load_run`).
        repo_id: the repo the card is written for.
        result: the run record.
        base_model: the base model's Hub id (written into the card and ``adapter_config.json``), or None.
        output_dir: the destination (default ``<run_dir>/hub``); an earlier build there is replaced.

    Returns:
        The folder: the head's files (``adapter/`` without peft's generic card), ``config.yaml``,
        ``result.json`` and ``README.md``.
    """
    folder = Path(output_dir).expanduser().resolve() if output_dir else run_dir / HUB_FOLDER
    _check_output(folder, run_dir)
    staging = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        adapter = run_dir / "adapter"
        for path in sorted(adapter.rglob("*")):
            relative = path.relative_to(adapter)
            if not path.is_file() or relative == Path(CARD) or relative.name.startswith("."):
                continue
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, staging / relative)
        if not (staging / RECIPE_FILE).is_file():
            # Heads saved before adapters carried their recipe: the run's resolved config is the same text.
            log.info("%s has no %s: writing the run's config.yaml as it", adapter, RECIPE_FILE)
            shutil.copyfile(run_dir / "config.yaml", staging / RECIPE_FILE)
        if base_model:
            _point_at_base_model(staging / ADAPTER_CONFIG, staging / RECIPE_FILE, base_model)
        for name in RUN_FILES:
            shutil.copyfile(run_dir / name, staging / name)
        card = build_card(
            result,
            repo_id=repo_id,
            base_model=base_model,
            files=folder_files(staging),
            overrides=_overrides(run_dir),
        )
        (staging / CARD).write_text(str(card), encoding="utf-8")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    swap_in(staging, folder)
    log.info("Built the Hub folder %s", folder)
    return folder


def folder_files(folder: Path) -> list[tuple[str, int]]:
    """``(path relative to folder, bytes)`` of every file in ``folder``, sorted by path."""
    return sorted(
        (path.relative_to(folder).as_posix(), path.stat().st_size)
        for path in folder.rglob("*")
        if path.is_file()
    )


def hub_token() -> str:
    """The Hugging Face token: ``HF_TOKEN``, else the one ``hf auth login`` saved.

    Raises:
        PeftrecError: there is none.
    """
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise PeftrecError(
            "no Hugging Face token: log in with `hf auth login` (or the older `huggingface-cli login`), or set "
            "HF_TOKEN to a token with write access (https://huggingface.co/settings/tokens). dry_run=true "
            "builds the folder without one"
        )
    return token


def hub_endpoint(endpoint: str | None = None) -> str:
    """The Hub to talk to: ``endpoint``, else ``HF_ENDPOINT`` now, else huggingface_hub's default.

    huggingface_hub reads ``HF_ENDPOINT`` once, when it is imported; reading it here again honours a
    value set later in the same process (tests, notebooks).
    """
    from huggingface_hub import constants

    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def upload(
    folder: Path, repo_id: str, *, token: str, endpoint: str, private: bool, commit_message: str
) -> tuple[str, str]:
    """Create the repo if needed and upload the folder in one commit.

    Args:
        folder: the built Hub folder.
        repo_id: ``owner/name``.
        token: a token with write access.
        endpoint: the Hub's URL.
        private: create the repo private.
        commit_message: the commit's summary.

    Returns:
        The repo's URL and the commit's URL.

    Raises:
        PeftrecError: offline mode, the Hub unreachable, or the Hub refused (token, permissions).
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    if constants.is_offline_mode():
        raise PeftrecError(
            "HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, so huggingface_hub makes no request: unset it to "
            "upload, or pass dry_run=true to only build the folder"
        )
    api = HfApi(endpoint=endpoint, token=token)
    log.info("Uploading %s to %s/%s", folder, endpoint, repo_id)
    try:
        # private=None (not False) when not asked: a new repo then follows the owner's default visibility.
        repo_url = api.create_repo(
            repo_id, private=True if private else None, exist_ok=True, repo_type="model"
        )
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=folder, repo_type="model", commit_message=commit_message
        )
    except HfHubHTTPError as err:
        raise PeftrecError(_refusal(err, repo_id, endpoint)) from err
    except Exception as err:
        # Connection refused, DNS, timeouts: httpx's TransportError family (not importable by a stable name).
        if not any(cls.__name__ == "TransportError" for cls in type(err).__mro__):
            raise
        raise PeftrecError(
            f"cannot reach the Hub at {endpoint} ({type(err).__name__}: {err}): check the network, or HF_ENDPOINT "
            "/ endpoint= for a mirror. dry_run=true builds the folder without the network"
        ) from err
    log.info("Uploaded: %s", commit.commit_url)
    return str(repo_url), commit.commit_url


def default_commit_message(result: dict[str, Any], run_dir: Path) -> str:
    """``Upload <head> <task> head (test <metric> <value>) from peftrec run <folder>``."""
    metric = result.get("select_metric")
    value = result["metrics"]["test"].get(metric) if metric else None
    score = f" (test {metric} {value:.4f})" if isinstance(value, int | float) else ""
    return f"Upload {result['method']} {result['task']} head{score} from peftrec run {run_dir.name}"


def parse_args(argv: list[str]) -> dict[str, Any]:
    """Read ``key=value`` arguments, Hydra style.

    Values are taken as text (booleans: true/false): a YAML parser (``OmegaConf.from_cli``) would turn a
    commit message such as ``fix: x`` into a mapping.

    Args:
        argv: the command-line arguments.

    Returns:
        The options, with defaults for those not given.

    Raises:
        PeftrecError: an argument without ``=``, an unknown key, a bad boolean, or a missing required key.
    """
    options: dict[str, Any] = dict.fromkeys(_TEXT_OPTIONS) | dict.fromkeys(_BOOL_OPTIONS, False)
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+")
        if not sep:
            raise PeftrecError(f"argument {arg!r} is not key=value: e.g. run_dir={arg} (see --help)")
        if key not in options:
            raise PeftrecError(
                f"unknown option {key!r}: the options are {', '.join(sorted(options))} (see --help)"
            )
        if key in _BOOL_OPTIONS:
            if value.lower() not in _TRUE | _FALSE:
                raise PeftrecError(f"{key}={value!r}: give {key}=true or {key}=false")
            options[key] = value.lower() in _TRUE
        else:
            options[key] = value or None
    for key in ("run_dir", "repo_id"):
        if not options[key]:
            raise PeftrecError(
                f"{key}= is required: python -m peftrec.publish run_dir=outputs/<recipe>/<time> "
                "repo_id=your-name/<repo> (see --help)"
            )
    return options


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: parse ``key=value`` arguments, publish, print what was built and uploaded."""
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help", "help") for arg in argv):
        print(USAGE)
        return
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        options = parse_args(argv)
        published = publish(**options)
    except PeftrecError as err:
        # The input is at fault, not the code: the message names the fix; a traceback would bury it.
        print(f"peftrec: error: {err}", file=sys.stderr)
        sys.exit(2)
    width = max(len(name) for name, _ in published.files)
    lines = [f"Hub folder: {published.folder}"]
    lines += [f"  {name:<{width}}  {size:>12,} bytes" for name, size in published.files]
    if published.url is None:
        lines.append(
            f"Dry run: nothing uploaded ({len(published.files)} files would go to {options['repo_id']}). "
            "Upload with the same command without dry_run=true."
        )
    else:
        lines.append(f"Uploaded {len(published.files)} files to {published.url} ({published.commit})")
    print("\n".join(lines))


def _check_output(folder: Path, run_dir: Path) -> None:
    """Refuse an output folder whose replacement would destroy something that is not an earlier build."""
    if folder == run_dir or folder in run_dir.parents or run_dir / "adapter" in (folder, *folder.parents):
        raise PeftrecError(
            f"output_dir={folder} would replace the run folder or its adapter: pick a new folder, e.g. the "
            f"default {run_dir / HUB_FOLDER}"
        )
    if folder.is_file():
        raise PeftrecError(f"output_dir={folder} is a file: pass a folder path")
    if folder.is_dir() and any(folder.iterdir()) and not _is_earlier_build(folder):
        raise PeftrecError(
            f"output_dir={folder} exists and is not a folder built by peftrec.publish, so it is not replaced: "
            "pass a new or empty folder"
        )


def _is_earlier_build(folder: Path) -> bool:
    return all((folder / name).is_file() for name in (CARD, ADAPTER_CONFIG, *RUN_FILES))


def _point_at_base_model(config_path: Path, recipe_path: Path, base_model: str) -> None:
    """Name the base model by its Hub id where a run saved a local folder's path: in
    ``adapter_config.json`` (peft's ``AutoPeftModelForCausalLM`` and the Hub's model tree read it) and as
    ``model.name`` of the shipped recipe (peftrec rebuilds the head from it on another machine). The run
    folder itself keeps the record of what ran."""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("base_model_name_or_path") != base_model:
        log.info(
            "adapter_config.json: base_model_name_or_path %s -> %s",
            config.get("base_model_name_or_path"),
            base_model,
        )
        config["base_model_name_or_path"] = base_model
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    from omegaconf import OmegaConf

    recipe = OmegaConf.load(recipe_path)
    name = str(OmegaConf.select(recipe, "model.name", default=""))
    if name and Path(name).expanduser().exists():  # a local folder; registry keys and Hub ids work anywhere
        log.info("%s: model.name %s -> %s", RECIPE_FILE, name, base_model)
        recipe.model.name = base_model
        recipe_path.write_text(OmegaConf.to_yaml(recipe), encoding="utf-8")


def _overrides(run_dir: Path) -> list[str] | None:
    """The command-line overrides Hydra saved for the run (None when the run folder has none)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    overrides = OmegaConf.to_container(OmegaConf.load(path))
    # hydra.run.dir names where the run folder was written: noise for someone reproducing the run.
    return [str(o) for o in overrides or [] if not str(o).startswith("hydra.")]


def _refusal(err: Exception, repo_id: str, endpoint: str) -> str:
    status = getattr(getattr(err, "response", None), "status_code", None)
    owner = repo_id.split("/")[0]
    if status == 401:
        return (
            f"the Hub at {endpoint} refused the token (401 Unauthorized: invalid or expired). Log in again "
            "with `hf auth login`, or set HF_TOKEN to a token with write access"
        )
    if status == 403:
        return (
            f"the token may not create or write {repo_id} (403 Forbidden): use a token with write access to "
            f"{owner!r} (a fine-grained token needs write permission on that user or organization)"
        )
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"the Hub at {endpoint} refused the upload to {repo_id} ({first_line}); fix what it names and run again"


if __name__ == "__main__":
    main()
