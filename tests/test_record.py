"""What a run record says about its source: the commit and the package versions."""

from __future__ import annotations

import subprocess
from importlib import metadata

import peftrec
from peftrec import record


def test_git_commit_outside_a_checkout_takes_the_commit_its_sender_named(monkeypatch):
    expected = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout
    assert record.git_commit()["commit"] == expected.strip()  # this checkout

    def no_checkout(*args, **kwargs):
        raise subprocess.CalledProcessError(128, args[0], stderr="fatal: not a git repository")

    monkeypatch.setattr(record.subprocess, "run", no_checkout)
    monkeypatch.delenv("PEFTREC_SOURCE_COMMIT", raising=False)
    assert record.git_commit() == {"commit": None, "dirty": None}
    monkeypatch.setenv("PEFTREC_SOURCE_COMMIT", "84b6009db815418ac99144204d2f119931eda8cb")
    assert record.git_commit() == {"commit": "84b6009db815418ac99144204d2f119931eda8cb", "dirty": None}


def test_package_versions_name_peftrec_run_from_a_tree_that_is_not_installed(monkeypatch):
    real_version = metadata.version

    def version(name: str) -> str:
        if name in ("peftrec", "hydra-core"):
            raise metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(record.metadata, "version", version)
    versions = record.package_versions()
    assert versions["peftrec"] == peftrec.__version__ == "0.1.0"
    assert versions["hydra-core"] is None  # any other missing package stays unknown
    assert versions["torch"] == real_version("torch")
