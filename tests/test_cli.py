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


def test_propagation_options_from_flags_and_config_file(tmp_path, capsys):
    from fresco_v2v.cli import build_parser, run_config_from_args

    conf = tmp_path / "run.yaml"
    conf.write_text("propagation_options:\n  colour_lookup: true\n  workers: 1\n")
    args = build_parser().parse_args(
        [
            "translate",
            "in.mp4",
            "--prompt",
            "x",
            "--config",
            str(conf),
            "--propagation-option",
            "workers=2",
            "--propagation-option",
            "flow=dis-fine",
        ]
    )
    got = run_config_from_args(args).propagation_config()
    assert (got.colour_lookup, got.workers, got.flow) == (True, 2, "dis-fine")  # the flag wins over the file
    assert main(["translate", "in.mp4", "--prompt", "x", "--propagation-option", "colour_lookup"]) == 2
    assert "--propagation-option: expected NAME=VALUE" in capsys.readouterr().err
    assert main(["propagate", "in.mp4", "--keys", str(tmp_path), "--option", "patch_size=4"]) == 2
    assert "options.patch_size: expected an odd integer >= 1, got 4" in capsys.readouterr().err


def test_env_says_whether_the_gmflow_checkpoint_is_found(tmp_path, capsys, monkeypatch):
    import torch

    from fresco_v2v.flow.gmflow import CHECKPOINT_NAME

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert main(["env"]) == 0
    assert f"gmflow         {CHECKPOINT_NAME} not found" in capsys.readouterr().out
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / CHECKPOINT_NAME).write_bytes(b"x")
    assert main(["env"]) == 0
    assert f"model/{CHECKPOINT_NAME} (--flow gmflow)" in capsys.readouterr().out


def test_clip_skip_flag_reaches_the_run_config():
    from fresco_v2v.cli import build_parser, run_config_from_args

    args = build_parser().parse_args(["translate", "in.mp4", "--prompt", "x", "--clip-skip", "2"])
    assert run_config_from_args(args).clip_skip == 2
    args = build_parser().parse_args(["translate", "in.mp4", "--prompt", "x", "--vae", "stabilityai/sd-vae-ft-mse"])
    assert run_config_from_args(args).vae == "stabilityai/sd-vae-ft-mse"
    assert run_config_from_args(build_parser().parse_args(["translate", "in.mp4", "--prompt", "x"])).clip_skip == 1
