"""The CLI maps library errors to exit code 2 with a message and no traceback."""

import subprocess
import sys

from fresco_v2v.cli import main
from fresco_v2v.testing import moving_square_clip, write_test_video


def test_keyframes_command(tmp_path, capsys):
    src = write_test_video(tmp_path / "in.mp4", moving_square_clip(30, 128, 128, 32, (8, 8), (2, 1)), 24)
    assert (
        main(["keyframes", str(src), "--s-min", "3", "--s-max", "8", "--batch-size", "3", "--resolution", "128"]) == 0
    )
    out = capsys.readouterr().out
    assert "30 frames at 24 fps" in out and "keyframes (" in out and "batch 1: 0 " in out


def test_bad_input_exit_code_2_without_traceback(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "fresco_v2v", "keyframes", str(tmp_path / "missing.mp4")], capture_output=True, text=True
    )
    assert r.returncode == 2
    assert "missing.mp4: no such file" in r.stderr and "Traceback" not in r.stderr


def test_bad_config_exit_code_2(tmp_path, capsys):
    src = write_test_video(tmp_path / "in.mp4", moving_square_clip(5, 128, 128, 32, (8, 8), (2, 1)), 24)
    assert main(["keyframes", str(src), "--s-min", "4", "--s-max", "2", "--resolution", "128"]) == 2
    assert "s_max: expected an integer >= s_min (4), got 2" in capsys.readouterr().err
