"""Results are written whole or not at all: a failure while writing leaves the old file and no debris."""

import os
import stat

import pytest

from peftrec.atomic import staged_file, write_bytes_atomic
from peftrec.record import write_json_atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out" / "result.json"
    write_json_atomic(target, {"auc": 0.7})
    with pytest.raises(RuntimeError), staged_file(target) as staging:
        staging.write_text('{"auc": ')  # half written when the crash comes
        raise RuntimeError("crash")
    assert target.read_text() == '{\n  "auc": 0.7\n}\n'
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.json"]


def test_written_files_replace_the_old_and_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_bytes_atomic(tmp_path / "deep" / "report.md", b"first")
        write_bytes_atomic(path, b"second")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"second"
    # Not mkstemp's private 0600: a report is an ordinary file.
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["report.md"]
