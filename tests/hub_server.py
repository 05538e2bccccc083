"""A local Hugging Face Hub for tests: the endpoints huggingface_hub 2.x calls to upload and download.

No mocks: point ``HfApi(endpoint=...)``, ``snapshot_download(..., endpoint=...)`` or ``HF_ENDPOINT`` at
:attr:`HubServer.url` and the real client code runs over real HTTP. Implemented (what
``create_repo``, ``upload_folder``, ``repo_info``/``model_info``, ``list_repo_tree``, ``hf_hub_download``
and ``snapshot_download`` request, read from huggingface_hub 2.4's sources):

- ``POST /api/repos/create`` (``{"name", "organization", "visibility", "type"}``; 409 when it exists);
- ``POST /api/validate-yaml`` (the README's front matter must be a YAML mapping; ``model-index`` is
  checked for the fields the Hub requires);
- ``POST /api/models/{repo}/preupload/{revision}``: every file is ``"uploadMode": "regular"``. The
  real Hub answers ``"lfs"`` for large or binary files, which huggingface_hub then sends to Xet
  storage (hf_xet installed) or the LFS batch API; a test server may keep every file in git, and then
  the commit carries each file's bytes (base64) and nothing else is needed;
- ``POST /api/models/{repo}/commit/{revision}`` (NDJSON: a header line, then ``file`` entries with
  base64 content, ``deletedFile`` / ``deletedFolder``);
- ``GET /api/models/{repo}[/revision/{revision}]`` (model info: ``sha``, ``siblings``, ``cardData``);
- ``GET /api/models/{repo}/tree/{revision}[/{path}]`` (what ``snapshot_download`` lists);
- ``HEAD`` / ``GET /{repo}/resolve/{revision}/{filename}`` with ``X-Repo-Commit``, ``ETag`` (the git
  blob id) and ``Content-Length``; a missing file answers 404 with ``X-Error-Code: EntryNotFound``.

Every commit is kept, so a revision may be a branch (``main``) or any commit id. Each request is
recorded with its ``Authorization`` header (:attr:`HubServer.requests`), so a test can check that a
token was sent. ``tokens`` (a set) makes write calls, and reads of private repos, require one of them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

# What the Hub's initial commit holds (abridged): every repo starts with it.
GITATTRIBUTES = (
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
)

_REPO = r"(?P<repo>[^/]+/[^/]+)"
_ROUTES = [
    ("POST", re.compile(r"/api/repos/create"), "create_repo"),
    ("POST", re.compile(r"/api/validate-yaml"), "validate_yaml"),
    ("POST", re.compile(rf"/api/models/{_REPO}/preupload/(?P<rev>[^/]+)"), "preupload"),
    ("POST", re.compile(rf"/api/models/{_REPO}/commit/(?P<rev>[^/]+)"), "commit"),
    ("GET", re.compile(rf"/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?"), "tree"),
    ("GET", re.compile(rf"/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?"), "model_info"),
    ("HEAD", re.compile(rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), "resolve"),
    ("GET", re.compile(rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), "resolve"),
]


def git_blob_id(content: bytes) -> str:
    """The git object id of a file's content (what the Hub calls a regular file's oid)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Commit:
    """One commit: its id, message and the full file tree after it."""

    oid: str
    summary: str
    files: dict[str, bytes]


@dataclass
class Repo:
    """A model repo: its visibility and commits (the last is the head of ``main``)."""

    repo_id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"))

    @property
    def head(self) -> Commit:
        return self.commits[-1]

    @property
    def files(self) -> dict[str, bytes]:
        """The files at the head of ``main``."""
        return self.head.files

    def at(self, revision: str) -> Commit | None:
        """The commit a revision names: ``main`` or a commit id."""
        if revision == "main":
            return self.head
        return next((c for c in self.commits if c.oid == revision), None)

    def add_commit(self, summary: str, files: dict[str, bytes]) -> Commit:
        digest = hashlib.sha1(f"{self.repo_id}\n{len(self.commits)}\n{summary}".encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + git_blob_id(files[path]).encode())
        commit = Commit(digest.hexdigest(), summary, dict(files))
        self.commits.append(commit)
        return commit


class HubError(Exception):
    """An HTTP error answer, with the Hub's error headers (huggingface_hub maps them to its errors)."""

    def __init__(self, status: int, message: str, code: str | None = None, **payload: object) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.payload = status, message, code, payload


class HubServer:
    """The Hub's state and the HTTP server in a background thread.

    Attributes:
        url: the endpoint, e.g. ``http://127.0.0.1:40123``.
        repos: repo id -> :class:`Repo`.
        requests: every request, ``{"method", "path", "query", "authorization", "body"}`` (body: the
            raw bytes sent).
        validated: the README contents sent to ``/api/validate-yaml``.
        tokens: ``None`` accepts any caller; a set requires ``Authorization: Bearer <one of them>``
            for writes and for reads of private repos.
    """

    def __init__(self, tokens: set[str] | None = None) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[dict] = []
        self.validated: list[str] = []
        self.tokens = tokens
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.hub = self  # type: ignore[attr-defined]
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="hub-server", daemon=True
        )

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def authorizations(self, kind: str | None = None) -> list[str | None]:
        """The ``Authorization`` headers received, optionally of one route (e.g. ``"commit"``)."""
        return [r["authorization"] for r in self.requests if kind is None or r["route"] == kind]

    # ---------------------------------------------------------------- dispatch

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple:
        """Answer one request. Returns ``(status, headers, body bytes)``."""
        parts = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        route, match = self._route(method, parts.path)
        with self._lock:
            self.requests.append(
                {
                    "method": method,
                    "path": parts.path,
                    "route": route,
                    "query": query,
                    "authorization": headers.get("authorization"),
                    "body": body,
                }
            )
            if route is None:
                return _json(404, {"error": f"{method} {parts.path} is not served by the test Hub"})
            args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
            try:
                return getattr(self, f"_{route}")(
                    method=method, headers=headers, body=body, query=query, **args
                )
            except HubError as err:
                extra = {"X-Error-Message": err.message}
                if err.code:
                    extra["X-Error-Code"] = err.code
                return _json(err.status, {"error": err.message, **err.payload}, extra)

    @staticmethod
    def _route(method: str, path: str) -> tuple[str | None, re.Match | None]:
        for verb, pattern, name in _ROUTES:
            match = pattern.fullmatch(path)
            if verb == method and match:
                return name, match
        return None, None

    def _check_write(self, headers: dict[str, str]) -> None:
        if self.tokens is not None and not self._authorized(headers):
            raise HubError(401, "Invalid credentials in Authorization header")

    def _authorized(self, headers: dict[str, str]) -> bool:
        auth = headers.get("authorization") or ""
        return self.tokens is None or (auth.startswith("Bearer ") and auth[7:] in self.tokens)

    def _repo(self, repo_id: str, headers: dict[str, str]) -> Repo:
        repo = self.repos.get(repo_id)
        # A private repo is invisible without a valid token, as on the Hub (404, not 403).
        if repo is None or (repo.private and (self.tokens is not None and not self._authorized(headers))):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _commit_at(self, repo: Repo, revision: str) -> Commit:
        commit = repo.at(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # ---------------------------------------------------------------- endpoints

    def _create_repo(self, *, headers: dict, body: bytes, **_: object) -> tuple:
        self._check_write(headers)
        payload = json.loads(body)
        if payload.get("type", "model") != "model":
            raise HubError(400, "this test Hub serves model repos only")
        if not payload.get("organization"):
            raise HubError(400, "name the owner: organization/name")
        repo_id = f"{payload['organization']}/{payload['name']}"
        url = f"{self.url}/{repo_id}"
        if repo_id in self.repos:
            # The Hub's 409 carries the url: create_repo(exist_ok=True) returns it.
            raise HubError(409, "You already created this model repo", url=url)
        repo = Repo(repo_id, private=payload.get("visibility") == "private")
        repo.add_commit("initial commit", {".gitattributes": GITATTRIBUTES})
        self.repos[repo_id] = repo
        return _json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, *, body: bytes, **_: object) -> tuple:
        content = json.loads(body)["content"]
        self.validated.append(content)
        errors = _card_errors(content)
        if errors:
            return _json(400, {"errors": [{"message": e} for e in errors], "warnings": []})
        return _json(200, {"errors": [], "warnings": []})

    def _preupload(self, *, repo: str, rev: str, headers: dict, body: bytes, **_: object) -> tuple:
        self._check_write(headers)
        head = self._commit_at(self._repo(repo, headers), rev)
        files = [
            {
                "path": f["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": git_blob_id(head.files[f["path"]]) if f["path"] in head.files else None,
            }
            for f in json.loads(body)["files"]
        ]
        return _json(200, {"files": files, "commitOid": head.oid})

    def _commit(self, *, repo: str, rev: str, headers: dict, body: bytes, query: dict, **_: object) -> tuple:
        self._check_write(headers)
        if query.get("create_pr"):
            raise HubError(400, "this test Hub does not open pull requests")
        target = self._repo(repo, headers)
        if rev != "main":
            raise HubError(
                404, f"Invalid rev id: {rev} (this test Hub has one branch, main)", "RevisionNotFound"
            )
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the commit payload must start with a header line")
        header = lines[0]["value"]
        if header.get("parentCommit") and header["parentCommit"] != target.head.oid:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(target.head.files)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, f"unsupported encoding {value.get('encoding')!r}")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: c for p, c in files.items() if not p.startswith(prefix)}
            else:  # lfsFile: never asked for, as preupload answers "regular" for every file
                raise HubError(400, f"unsupported commit entry {key!r}")
        commit = target.add_commit(header.get("summary", ""), files)
        return _json(
            200,
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self.url}/{repo}/commit/{commit.oid}",
                "hookOutput": "",
                "pullRequestUrl": None,
            },
        )

    def _model_info(self, *, repo: str, headers: dict, query: dict, rev: str = "main", **_: object) -> tuple:
        target = self._repo(repo, headers)
        commit = self._commit_at(target, rev)
        blobs = query.get("blobs", "").lower() == "true"
        siblings = [
            {"rfilename": path, **({"size": len(data), "blobId": git_blob_id(data)} if blobs else {})}
            for path, data in sorted(commit.files.items())
        ]
        card = _front_matter(commit.files.get("README.md", b"").decode("utf-8", "replace")) or {}
        return _json(
            200,
            {
                "_id": hashlib.md5(repo.encode()).hexdigest()[:24],
                "id": repo,
                "author": repo.split("/")[0],
                "sha": commit.oid,
                "private": target.private,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": card.get("tags", []) if isinstance(card, dict) else [],
                "library_name": card.get("library_name") if isinstance(card, dict) else None,
                "pipeline_tag": card.get("pipeline_tag") if isinstance(card, dict) else None,
                "cardData": card if isinstance(card, dict) else None,
                "createdAt": target.created_at,
                "lastModified": target.created_at,
                "siblings": siblings,
            },
        )

    def _tree(self, *, repo: str, rev: str, headers: dict, query: dict, path: str = "", **_: object) -> tuple:
        commit = self._commit_at(self._repo(repo, headers), rev)
        recursive = query.get("recursive", "false").lower() == "true"
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        entries: dict[str, dict] = {}
        for name, data in sorted(commit.files.items()):
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix) :].split("/")
            # Folders on the way to a file are entries of their own (all of them when recursive).
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                folder = prefix + "/".join(parts[:depth])
                entries.setdefault(
                    folder,
                    {"type": "directory", "oid": git_blob_id(folder.encode()), "size": 0, "path": folder},
                )
            if recursive or len(parts) == 1:
                entries[name] = {"type": "file", "oid": git_blob_id(data), "size": len(data), "path": name}
        if prefix and not entries:
            raise HubError(404, f"{path} does not exist at {rev}", "EntryNotFound")
        return _json(200, list(entries.values()))

    def _resolve(self, *, method: str, repo: str, rev: str, path: str, headers: dict, **_: object) -> tuple:
        commit = self._commit_at(self._repo(repo, headers), rev)
        if path not in commit.files:
            status, answer_headers, body = _json(
                404, {"error": f"{path} does not exist"}, {"X-Error-Code": "EntryNotFound"}
            )
            answer_headers["X-Repo-Commit"] = commit.oid
            return status, answer_headers, body
        data = commit.files[path]
        answer_headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(len(data)),
            "ETag": f'"{git_blob_id(data)}"',
            "X-Repo-Commit": commit.oid,
            "Accept-Ranges": "none",
        }
        return 200, answer_headers, b"" if method == "HEAD" else data


def _json(status: int, payload: object, headers: dict[str, str] | None = None) -> tuple:
    body = json.dumps(payload).encode()
    return status, {"Content-Type": "application/json", **(headers or {})}, body


def _front_matter(content: str) -> object | None:
    """The YAML between the leading ``---`` lines of a card, parsed (None when there is none)."""
    match = re.match(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", content, flags=re.DOTALL)
    return yaml.safe_load(match.group(1)) if match else None


def _card_errors(content: str) -> list[str]:
    """What the Hub's metadata validation would object to (the checks that concern model cards)."""
    try:
        meta = _front_matter(content)
    except yaml.YAMLError as err:
        return [f"YAML is invalid: {err}"]
    if meta is None:
        return []
    if not isinstance(meta, dict):
        return ["the metadata must be a YAML mapping"]
    errors = []
    for key in ("base_model", "datasets", "tags", "language"):
        value = meta.get(key)
        if value is not None and not (
            isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        ):
            errors.append(f'"{key}" must be a string or a list of strings')
    for key in ("library_name", "pipeline_tag", "license"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            errors.append(f'"{key}" must be a string')
    for entry in meta.get("model-index") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            errors.append('"model-index[].name" is required')
            continue
        for result in entry.get("results") or []:
            if not isinstance(result.get("task", {}).get("type"), str):
                errors.append('"model-index[].results[].task.type" is required')
            dataset = result.get("dataset") or {}
            if not (isinstance(dataset.get("type"), str) and isinstance(dataset.get("name"), str)):
                errors.append('"model-index[].results[].dataset" needs "type" and "name"')
            for metric in result.get("metrics") or []:
                if not isinstance(metric.get("type"), str) or "value" not in metric:
                    errors.append('"model-index[].results[].metrics[]" needs "type" and "value"')
    return errors


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the Hub; every answer has a Content-Length

    def _serve(self) -> None:
        body = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, answer_headers, payload = self.server.hub.handle(self.command, self.path, headers, body)  # type: ignore[attr-defined]
        self.send_response(status)
        answer_headers.setdefault("Content-Length", str(len(payload)))
        for key, value in answer_headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # a streamed body
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass  # requests are recorded in HubServer.requests; stderr stays quiet


@pytest.fixture
def hub_server() -> Iterator[HubServer]:
    """A fresh local Hub for one test; its ``url`` is the endpoint to pass to huggingface_hub."""
    server = HubServer().start()
    try:
        yield server
    finally:
        server.stop()
