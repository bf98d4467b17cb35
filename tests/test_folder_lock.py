"""One run per output folder: a held folder stops a second run at once, a dead run's lock is taken over."""

import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest

from fresco_v2v.folder_lock import LOCK_FILE, FolderBusy, lock_folder
from fresco_v2v.testing import moving_square_clip, write_test_video
from tests.test_runner import NTSC, translate


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    d = tmp_path_factory.mktemp("in")
    return write_test_video(d / "in.mp4", moving_square_clip(12, 64, 80, 20, (8, 20), (3, 1)), NTSC)


@pytest.fixture
def live_pid():
    """The pid of a process that runs for the test's duration."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield p.pid
    p.kill()
    p.wait()


@pytest.fixture
def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def write_lock(state, **holder):
    state.mkdir(parents=True, exist_ok=True)
    base = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "token": "theirs"}
    (state / LOCK_FILE).write_text(json.dumps(base | holder))


def test_a_second_lock_is_refused_naming_the_holder_and_released_locks_free_the_folder(tmp_path):
    state = tmp_path / "out" / ".fresco"
    with lock_folder(state):
        with pytest.raises(FolderBusy, match=rf"another run uses this output folder \(process {os.getpid()} on"):
            lock_folder(state)
    assert not (state / LOCK_FILE).exists()
    lock_folder(state).release()  # free again


def test_a_live_run_holds_the_folder_and_a_dead_runs_lock_is_taken_over(tmp_path, live_pid, dead_pid, caplog):
    state = tmp_path / ".fresco"
    write_lock(state, pid=live_pid)
    with pytest.raises(FolderBusy, match=f"process {live_pid} on"):
        lock_folder(state)
    write_lock(state, pid=dead_pid)
    with caplog.at_level(logging.WARNING), lock_folder(state) as lock:
        assert json.loads((state / LOCK_FILE).read_text())["token"] == lock.token
    assert f"no longer running (process {dead_pid}" in caplog.text
    assert not (state / LOCK_FILE).exists()


def test_another_hosts_lock_holds_and_says_how_to_free_it(tmp_path):
    state = tmp_path / ".fresco"
    write_lock(state, host="render-node-7", pid=1)
    with pytest.raises(FolderBusy, match=r"process 1 on render-node-7.*delete .*lock"):
        lock_folder(state)


def test_an_unreadable_lock_is_held_while_fresh_and_taken_over_when_old(tmp_path):
    state = tmp_path / ".fresco"
    state.mkdir()
    (state / LOCK_FILE).write_text("")
    with pytest.raises(FolderBusy, match="is being written"):
        lock_folder(state)
    old = time.time() - 60
    os.utime(state / LOCK_FILE, (old, old))
    lock_folder(state).release()


def test_a_lock_taken_over_by_another_run_is_not_removed_by_the_first(tmp_path):
    state = tmp_path / ".fresco"
    lock = lock_folder(state)
    write_lock(state, token="someone-else")
    lock.release()
    assert json.loads((state / LOCK_FILE).read_text())["token"] == "someone-else"


def test_translate_into_a_held_folder_stops_at_once_and_overwrite_deletes_nothing(src, tmp_path, live_pid, capsys):
    out = tmp_path / "run"
    assert translate(src, out) == 0
    write_lock(out / ".fresco", pid=live_pid)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    for extra in ([], ["--overwrite"]):
        assert translate(src, out, *extra) == 2
        assert f"another run uses this output folder (process {live_pid}" in capsys.readouterr().err
        assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing written, nothing deleted


def test_a_finished_or_failed_run_leaves_no_lock(src, tmp_path, monkeypatch):
    from fresco_v2v import run_folder

    assert translate(src, tmp_path / "ok") == 0
    assert not (tmp_path / "ok" / ".fresco" / LOCK_FILE).exists()
    usage = run_folder.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(run_folder.shutil, "disk_usage", lambda p: usage._replace(free=0))
    assert translate(src, tmp_path / "full") == 2  # fails after the lock was taken
    assert not (tmp_path / "full" / ".fresco" / LOCK_FILE).exists()


def test_a_lock_this_process_left_behind_is_taken_over(tmp_path, caplog):
    """A run of this process that could not remove its lock (a disk gone read-only) does not block the next."""
    state = tmp_path / ".fresco"
    write_lock(state, token="an-earlier-run-of-this-process")
    with caplog.at_level(logging.WARNING), lock_folder(state):
        pass
    assert "no longer running" in caplog.text
