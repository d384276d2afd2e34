"""rnn_jax.files: atomic writes leave the old file and no temporary when they fail, keep the
file's mode and write through a symbolic link."""

import os
import stat
import threading

import pytest

from rnn_jax.files import write_text_atomic


def test_atomic_write_keeps_the_mode_and_writes_through_a_symlink(tmp_path):
    """Replacing a file reset its mode to the umask's default (a 0o600 secret became 0o644),
    and a symlinked path became a regular file while its target kept the old text."""
    path = tmp_path / "secret.json"
    path.write_text("old")
    os.chmod(path, 0o600)
    write_text_atomic(path, "new")
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o600
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "results.json"
    target.write_text("old")
    os.chmod(target, 0o640)
    link = tmp_path / "results.json"
    link.symlink_to(os.path.join("real", "results.json"))  # relative, as `ln -s` makes
    write_text_atomic(link, "new")
    assert link.is_symlink() and os.readlink(link) == os.path.join("real", "results.json")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o640
    dangling = tmp_path / "report.md"
    dangling.symlink_to(tmp_path / "real" / "report.md")
    write_text_atomic(dangling, "made")
    assert dangling.is_symlink() and (tmp_path / "real" / "report.md").read_text() == "made"
    with pytest.raises(UnicodeEncodeError):  # a failed write through the link: no temporary
        write_text_atomic(link, "\ud800")
    assert target.read_text() == "new"
    assert sorted(os.listdir(tmp_path / "real")) == ["report.md", "results.json"]
    assert sorted(os.listdir(tmp_path)) == ["real", "report.md", "results.json", "secret.json"]


def test_atomic_write_leaves_the_old_file_and_no_temporary_when_it_fails(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old")
    with pytest.raises(UnicodeEncodeError):  # fails inside the write, after the file is open
        write_text_atomic(path, "new \ud800")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["results.json"]
    (tmp_path / "dir").mkdir()
    with pytest.raises(OSError):  # fails at the rename
        write_text_atomic(tmp_path / "dir", "text")
    assert sorted(os.listdir(tmp_path)) == ["dir", "results.json"]
    write_text_atomic(path, "néw")
    assert path.read_text(encoding="utf-8") == "néw"
    assert sorted(os.listdir(tmp_path)) == ["dir", "results.json"]


def test_atomic_writes_from_two_threads_each_use_their_own_temporary(tmp_path, monkeypatch):
    """Both threads used `.<name>.tmp-<pid>`: the second truncated and renamed the first's
    temporary, whose own rename then failed with FileNotFoundError."""
    path, replace, done = tmp_path / "results.json", os.replace, []

    def replace_after_another_writer(src, dst):  # the other thread writes between
        if not done:
            done.append(True)
            other = threading.Thread(target=write_text_atomic, args=(path, "second"))
            other.start()
            other.join()
        replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_after_another_writer)
    write_text_atomic(path, "first")  # its rename comes last
    assert path.read_text() == "first" and os.listdir(tmp_path) == ["results.json"]
