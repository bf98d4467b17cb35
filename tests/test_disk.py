"""Nothing lost on a full or read-only disk, and damaged resume state is redone, never a traceback."""

import errno
import logging
import os
import subprocess
import sys

import pytest

from fresco_v2v import runner
from fresco_v2v.disk import PARTIAL, write_bytes_atomic
from fresco_v2v.encode import write_video
from fresco_v2v.errors import WriteError
from fresco_v2v.testing import moving_square_clip, write_test_video
from tests.test_runner import NTSC, translate


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    d = tmp_path_factory.mktemp("in")
    return write_test_video(d / "in.mp4", moving_square_clip(12, 64, 80, 20, (8, 20), (3, 1)), NTSC)


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs (needs the right to mount, as root in CI; skipped elsewhere)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk):
    """Leaves no free byte on ``disk``."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)


def partial_files(folder):
    return [p for p in folder.rglob("*") if PARTIAL in p.name]


def test_a_failed_write_names_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    def no_space(*a):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("fresco_v2v.disk.os.replace", no_space)
    with pytest.raises(WriteError, match=r"x\.json: could not be written: the disk is full \(.* free there\)"):
        write_bytes_atomic(tmp_path / "x.json", b"{}")
    assert list(tmp_path.iterdir()) == []


def test_disk_full_mid_run_is_one_message_keeps_finished_batches_and_resumes(src, small_disk, monkeypatch, capsys):
    out = small_disk / "run"
    real = runner.save_anchors
    saved = []

    def then_fill(path, anchors):
        real(path, anchors)
        saved.append(path.name)
        if len(saved) == 1:
            fill(small_disk)  # the disk fills up after the first batch

    monkeypatch.setattr(runner, "save_anchors", then_fill)
    assert translate(src, out) == 2
    err = capsys.readouterr().err
    assert "could not be written: the disk is full (0.0 MB free there)" in err and "Traceback" not in err
    assert "the finished keyframe batches and video chunks are kept" in err
    assert not partial_files(out) and (out / ".fresco" / "batch_0000.pt").is_file()
    (small_disk / "filler").unlink()
    assert translate(src, out) == 0  # space freed: the same command goes on
    assert saved[1:] and "batch_0000.pt" not in saved[1:]  # batch 0 was not redone
    assert not (out / ".fresco" / "lock").exists()


def test_a_read_only_disk_is_one_message(src, small_disk, monkeypatch, capsys):
    out = small_disk / "run"
    real = runner.save_anchors

    def then_read_only(path, anchors):
        real(path, anchors)
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)

    monkeypatch.setattr(runner, "save_anchors", then_read_only)
    assert translate(src, out) == 2
    err = capsys.readouterr().err
    assert "could not be written: the file system is read-only" in err and "Traceback" not in err


def test_the_encoder_on_a_full_disk_raises_write_error_and_leaves_nothing(small_disk):
    fill(small_disk)
    frames = list(moving_square_clip(8, 64, 64, 16, (4, 4), (1, 1)))
    with pytest.raises(WriteError, match="out.mp4: could not be written: the disk is full"):
        write_video(small_disk / "out.mp4", frames, 24)
    assert not partial_files(small_disk) and not (small_disk / "out.mp4").exists()


def test_a_killed_runs_temporaries_are_removed_at_the_next_start(src, tmp_path):
    out = tmp_path / "run"
    (out / "keyframes").mkdir(parents=True)
    (out / ".fresco" / "chunks").mkdir(parents=True)
    leftovers = [
        out / "keyframes" / f".0003.png{PARTIAL}99999",
        out / ".fresco" / "chunks" / f".chunk_0001{PARTIAL}5.mp4",
    ]
    for p in leftovers:
        p.write_bytes(b"half")
    assert translate(src, out) == 0
    assert not any(p.exists() for p in leftovers) and not partial_files(out)


def test_damaged_batch_files_are_redone_alone_and_the_video_is_the_same(src, tmp_path, monkeypatch, caplog):
    out = tmp_path / "run"
    assert translate(src, out) == 0
    video = (out / "video.mp4").read_bytes()
    state = out / ".fresco"
    batches = sorted(state.glob("batch_*.pt"))
    assert len(batches) >= 3
    batches[1].write_bytes(b"")  # empty
    data = batches[2].read_bytes()
    batches[2].write_bytes(data[: len(data) // 2])  # cut off
    redone = []
    real = runner._translate_batch

    def spy(plan, b, *a, **k):
        redone.append(b)
        return real(plan, b, *a, **k)

    monkeypatch.setattr(runner, "_translate_batch", spy)
    (out / "video.mp4").unlink()
    with caplog.at_level(logging.WARNING):
        assert translate(src, out) == 0
    assert redone == [1, 2]
    assert f"{batches[1]}: damaged" in caplog.text and f"{batches[2]}: damaged" in caplog.text
    assert (out / "video.mp4").read_bytes() == video


def test_a_cut_off_keyframe_png_redoes_its_batch(src, tmp_path, monkeypatch, caplog):
    out = tmp_path / "run"
    assert translate(src, out) == 0
    png = sorted((out / "keyframes").glob("*.png"))[0]
    png.write_bytes(png.read_bytes()[:20])
    redone = []
    real = runner._translate_batch
    monkeypatch.setattr(runner, "_translate_batch", lambda plan, b, *a, **k: redone.append(b) or real(plan, b, *a, **k))
    with caplog.at_level(logging.WARNING):
        assert translate(src, out) == 0
    assert redone == [0] and "batch 0 is done again" in caplog.text


def test_a_damaged_config_file_is_a_message_naming_it(src, tmp_path, capsys):
    out = tmp_path / "run"
    assert translate(src, out) == 0
    (out / ".fresco" / "config.json").write_text('{"model": "ti')
    assert translate(src, out) == 2
    err = capsys.readouterr().err
    assert f"{out / '.fresco' / 'config.json'}: damaged" in err and "--overwrite" in err and "Traceback" not in err


def test_a_damaged_keyframe_chain_is_rebuilt(src, tmp_path, caplog):
    out = tmp_path / "run"
    assert translate(src, out) == 0
    chain = out / ".fresco" / "keyframe-chain.pt"
    assert chain.is_file()
    chain.write_bytes(b"")
    for b in sorted((out / ".fresco").glob("batch_*.pt"))[1:]:
        b.unlink()  # the later batches need the chain again
    (out / "video.mp4").unlink()
    with caplog.at_level(logging.WARNING):
        assert translate(src, out) == 0
    assert "the keyframe chain is rebuilt" in caplog.text
