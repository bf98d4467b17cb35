"""`fresco translate` end to end on the tiny model: outputs, rate, audio, resume, config files, and bad input."""

import json
import os
import re
from fractions import Fraction

import av
import numpy as np
import pytest
import yaml

from fresco_v2v.cli import main
from fresco_v2v.pipeline import FrescoPipeline
from fresco_v2v.testing import moving_square_clip, write_test_video
from fresco_v2v.video import read_video

NTSC = Fraction(30000, 1001)
FAST = [
    "--model",
    "tiny",
    "--steps",
    "2",
    "--strength",
    "1.0",
    "--resolution",
    "64",
    "--s-min",
    "2",
    "--s-max",
    "4",
    "--batch-size",
    "3",
    "--quiet",
]


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    d = tmp_path_factory.mktemp("in")
    return write_test_video(d / "in.mp4", moving_square_clip(12, 64, 80, 20, (8, 20), (3, 1)), NTSC)


def translate(src, out, *extra):
    return main(["translate", str(src), "--prompt", "a painting", "-o", str(out), *FAST, *extra])


def test_translate_end_to_end(src, tmp_path, capsys):
    assert translate(src, tmp_path / "run") == 0
    clip = read_video(tmp_path / "run" / "video.mp4", short_side=None)
    assert clip.num_frames == 12 and clip.fps == NTSC and clip.audio is not None and clip.audio.codec == "aac"
    report = json.loads((tmp_path / "run" / "run.json").read_text())
    keys = report["keyframes"]
    assert sorted(int(p.stem) for p in (tmp_path / "run" / "keyframes").glob("*.png")) == keys
    assert report["fps"] == "30000/1001" and report["audio"].startswith("kept") and "noise-like" in report["note"]
    assert set(report["seconds"]) >= {"read", "keyframes", "translate", "propagate_and_encode"}  # streamed together
    assert {"torch", "diffusers", "fresco-v2v"} <= set(report["versions"])
    assert not [p for p in (tmp_path / "run").rglob("*partial*")]


def test_resume_skips_finished_batches(src, tmp_path, monkeypatch):
    calls = []
    original = FrescoPipeline.__call__

    def counting(self, frames, *a, **k):
        calls.append(len(calls))
        if len(calls) == 2 and os.environ.get("FRESCO_TEST_KILL") == "1":
            raise KeyboardInterrupt  # killed during the second batch
        return original(self, frames, *a, **k)

    monkeypatch.setattr(FrescoPipeline, "__call__", counting)
    monkeypatch.setenv("FRESCO_TEST_KILL", "1")
    assert translate(src, tmp_path / "run") == 130
    assert (tmp_path / "run" / ".fresco" / "batch_0000.pt").is_file()
    assert not (tmp_path / "run" / "video.mp4").exists()
    batches = None
    monkeypatch.setenv("FRESCO_TEST_KILL", "0")
    calls.clear()
    assert translate(src, tmp_path / "run") == 0
    batches = json.loads((tmp_path / "run" / "run.json").read_text())["batches"]
    assert len(calls) == len(batches) - 1  # batch 0 was not redone
    # and the result is the one an uninterrupted run gives (anchors restored from disk)
    assert translate(src, tmp_path / "fresh") == 0
    for p in (tmp_path / "fresh" / "keyframes").glob("*.png"):
        assert p.read_bytes() == (tmp_path / "run" / "keyframes" / p.name).read_bytes()


def test_changed_config_refuses_to_resume(src, tmp_path, capsys):
    assert translate(src, tmp_path / "run") == 0
    assert translate(src, tmp_path / "run", "--seed", "3") == 2
    err = capsys.readouterr().err
    assert "changed: seed" in err and "--overwrite" in err
    assert translate(src, tmp_path / "run", "--seed", "3", "--overwrite") == 0


def test_config_file_and_run_json_reproduce(src, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "input": str(src),
                "prompt": "a painting",
                "model": "tiny",
                "steps": 2,
                "strength": 1.0,
                "resolution": 64,
                "s_min": 2,
                "s_max": 4,
                "batch_size": 3,
                "keyframe_prompts": {0: "at dawn", "0.2s": "at night"},
                "fresco": {"optimization": {"iterations": 3}},
            }
        )
    )
    assert main(["translate", "--config", str(cfg), "-o", str(tmp_path / "a"), "--seed", "5", "--quiet"]) == 0
    saved = json.loads((tmp_path / "a" / "run.json").read_text())["config"]
    assert saved["seed"] == 5 and saved["fresco"]["optimization"]["iterations"] == 3
    assert saved["keyframe_prompts"] == {"0": "at dawn", "0.2s": "at night"}
    assert main(["translate", "--config", str(tmp_path / "a" / "run.json"), "-o", str(tmp_path / "b"), "--quiet"]) == 0
    again = json.loads((tmp_path / "b" / "run.json").read_text())["config"]
    assert {k: v for k, v in again.items() if k != "output"} == {k: v for k, v in saved.items() if k != "output"}


def test_no_propagation_and_colorize(src, tmp_path):
    assert translate(src, tmp_path / "run", "--no-propagation", "--colorize") == 0
    out = read_video(tmp_path / "run" / "video.mp4", short_side=None).frames
    inp = read_video(src, short_side=64).frames
    import cv2

    lum = lambda f: cv2.cvtColor(f, cv2.COLOR_RGB2LAB)[..., 0].astype(int)  # noqa: E731
    assert out.shape == inp.shape and np.abs(lum(out[5]) - lum(inp[5])).mean() < 6  # lightness of the input


def test_propagation_options_reach_the_propagation(src, tmp_path, monkeypatch):
    from fresco_v2v import propagate as stage

    seen = []
    real = stage.iter_propagate

    def spy(frames, keys, stylized, config=None, **kw):
        seen.append(config)
        return real(frames, keys, stylized, config, **kw)

    monkeypatch.setattr(stage, "iter_propagate", spy)  # the runner streams: it calls iter_propagate
    assert translate(src, tmp_path / "run", "--propagation-option", "colour_lookup=true") == 0
    assert [c.colour_lookup for c in seen] == [True]
    report = json.loads((tmp_path / "run" / "run.json").read_text())
    assert report["config"]["propagation_options"] == {"colour_lookup": True}


def test_unreadable_audio_continues_without_it(src, tmp_path, capsys, monkeypatch):
    from fresco_v2v import encode

    def broken(out, audio):
        raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")

    monkeypatch.setattr(encode, "_add_audio", broken)
    assert translate(src, tmp_path / "run") == 0
    report = json.loads((tmp_path / "run" / "run.json").read_text())
    assert report["audio"].startswith("dropped")
    with av.open(str(tmp_path / "run" / "video.mp4")) as c:
        assert not c.streams.audio and c.streams.video[0].frames == 12


def test_out_of_memory_message(src, tmp_path, capsys, monkeypatch):
    import torch

    def oom(self, *a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(FrescoPipeline, "__call__", oom)
    assert translate(src, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "out of memory translating batch 0 (3 frames of 64x64)" in err and "--batch-size" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--s-min", "5", "--s-max", "3"], "s_max: expected an integer >= s_min (5), got 3"),
        (["--batch-size", "2"], "batch_size: expected an integer >= 3"),
        (["--strength", "1.5"], "strength: expected a number in (0, 1], got 1.5"),
        (["--controlnet", "scribble"], "controlnet.0: expected a type among ['canny', 'depth', 'hed']"),
        (["--resolution", "100"], "resolution: expected a multiple of 64"),
        (["--flow", "raft"], "flow: expected one of"),
    ],
)
def test_invalid_options_exit_2(src, tmp_path, capsys, args, message):
    assert translate(src, tmp_path / "run", *args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bad_inputs_exit_2(tmp_path, capsys, src):
    notvideo = tmp_path / "notes.mp4"
    notvideo.write_text("hello")
    cases = [
        (["translate", str(tmp_path / "missing.mp4"), "--prompt", "x", *FAST], "missing.mp4: no such file"),
        (["translate", str(notvideo), "--prompt", "x", *FAST], "notes.mp4: not a video file"),
        (["translate", str(src), *FAST], "prompt: expected a value"),
    ]
    for argv, message in cases:
        assert main(argv + ["-o", str(tmp_path / "o")]) == 2
        assert message in capsys.readouterr().err


def test_zero_decodable_frames_exit_2(tmp_path, capsys):
    ok = write_test_video(tmp_path / "ok.mp4", moving_square_clip(6, 64, 64, 16, (8, 8), (2, 2)), 24, audio_codec=None)
    data = bytearray(ok.read_bytes())
    start, end = data.find(b"mdat") + 4, data.find(b"moov") - 4  # keep the index, zero every frame's data
    data[start:end] = bytes(end - start)
    bad = tmp_path / "zeroed.mp4"
    bad.write_bytes(bytes(data))
    assert main(["translate", str(bad), "--prompt", "x", "-o", str(tmp_path / "o"), *FAST]) == 2
    assert "zeroed.mp4: no frame could be decoded" in capsys.readouterr().err


def test_model_not_found_offline(src, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = [
        "translate",
        str(src),
        "--prompt",
        "x",
        "-o",
        str(tmp_path / "o"),
        "--model",
        "nobody/no-such-model",
        "--controlnet",
        f"canny:{tmp_path / 'cn'}",
        "--quiet",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "could not load ControlNet" in err and "local folder" in err


def test_output_not_writable(src, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert translate(src, blocker / "sub") == 2
    assert "the output folder is not writable" in capsys.readouterr().err


def test_propagate_command(src, tmp_path, capsys):
    assert translate(src, tmp_path / "run") == 0
    out = tmp_path / "prop.mp4"
    assert (
        main(
            ["propagate", str(src), "--keys", str(tmp_path / "run" / "keyframes"), "-o", str(out)]  # size: the keys'
        )
        == 0
    )
    clip = read_video(out, short_side=None)
    assert clip.num_frames == 12 and clip.fps == NTSC and clip.audio is not None
    assert f"{out}: 12 frames at 30000/1001 (29.97) fps from " in capsys.readouterr().out
    assert main(["propagate", str(src), "--keys", str(tmp_path / "nokeys"), "--resolution", "64"]) == 2
    assert "no such folder of keyframes" in capsys.readouterr().err
    keys = tmp_path / "run" / "keyframes"
    (keys / "0.png").write_bytes((keys / "0000.png").read_bytes())  # two files for frame 0
    assert main(["propagate", str(src), "--keys", str(keys), "--resolution", "64"]) == 2
    assert "two keyframes for frame 0" in capsys.readouterr().err


def test_keyframe_files_by_index(tmp_path):
    from fresco_v2v.propagate.run import keyframe_files

    names = ["0012.png", "3.JPG", "notes.txt", "cover.png", "0007.jpeg", "20.webp"]
    assert keyframe_files(tmp_path / n for n in names) == [
        (3, tmp_path / "3.JPG"),
        (7, tmp_path / "0007.jpeg"),
        (12, tmp_path / "0012.png"),
        (20, tmp_path / "20.webp"),
    ]


@pytest.mark.shared_data
def test_car_turn_tiny_keeps_count_and_rate(shared_videos, tmp_path):
    src = shared_videos / "car-turn.mp4"
    assert (
        main(
            [
                "translate",
                str(src),
                "--prompt",
                "a painting",
                "-o",
                str(tmp_path / "car"),
                "--model",
                "tiny",
                "--steps",
                "2",
                "--strength",
                "1.0",
                "--resolution",
                "128",
                "--s-min",
                "10",
                "--s-max",
                "30",
                "--batch-size",
                "4",
                "--quiet",
            ]
        )
        == 0
    )
    clip = read_video(tmp_path / "car" / "video.mp4", short_side=None)
    assert clip.num_frames == 80 and clip.fps == 10


def test_background_smoothing_with_masks(src, tmp_path, capsys):
    import cv2

    assert translate(src, tmp_path / "a", "--background-smoothing", "0.5") == 2
    assert "foreground_masks: expected a folder of masks" in capsys.readouterr().err
    masks = tmp_path / "masks"
    masks.mkdir()
    for k in range(12):
        m = np.zeros((64, 80), np.uint8)
        m[20:44, 8 + 3 * k : 28 + 3 * k] = 255  # the moving square is the foreground
        cv2.imwrite(str(masks / f"{k:04d}.png"), m)
    assert translate(src, tmp_path / "b", "--background-smoothing", "0.5", "--foreground-masks", str(masks)) == 0
    assert read_video(tmp_path / "b" / "video.mp4", short_side=None).num_frames == 12


def test_resume_allows_output_only_changes_and_checks_the_input_file(src, tmp_path, capsys):
    import shutil

    assert translate(src, tmp_path / "run") == 0
    assert translate(src, tmp_path / "run", "--no-propagation", "--colorize") == 0  # same keyframes: resumes
    copy = tmp_path / "in.mp4"
    shutil.copy(src, copy)
    assert translate(copy, tmp_path / "run2") == 0
    os.utime(copy, ns=(1, 1))  # "another clip at the same path"
    assert translate(copy, tmp_path / "run2") == 2
    assert "changed: input_file" in capsys.readouterr().err


def test_fresco_section_errors(src, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"input": str(src), "prompt": "x", "fresco": {"optimisation": {"iterations": 3}}}))
    assert main(["translate", "--config", str(bad), "-o", str(tmp_path / "o"), "--quiet"]) == 2
    assert "fresco: expected known sections (did you mean 'optimization'?)" in capsys.readouterr().err
    bad.write_text(yaml.safe_dump({"input": str(src), "prompt": "x", "fresco": {"attention": {"lamda_s": 3}}}))
    assert main(["translate", "--config", str(bad), "-o", str(tmp_path / "o"), "--quiet"]) == 2
    assert (
        "fresco.attention: expected known names (did you mean 'lambda_s'?), got ['lamda_s']" in capsys.readouterr().err
    )
    bad.write_text(yaml.safe_dump({"input": str(src), "prompt": "x", "colour": True}))
    assert main(["translate", "--config", str(bad), "-o", str(tmp_path / "o"), "--quiet"]) == 2
    assert "config: expected known names (did you mean 'colorize'?), got ['colour']" in capsys.readouterr().err
    bad.write_text(yaml.safe_dump({"input": str(src), "prompt": "x", "zzz": True}))
    assert main(["translate", "--config", str(bad), "-o", str(tmp_path / "o"), "--quiet"]) == 2
    assert "config: expected names among ['added_prompt'," in capsys.readouterr().err
    ok = tmp_path / "null.yaml"
    ok.write_text(yaml.safe_dump({"input": str(src), "prompt": "x", "fresco": None}))
    assert main(["translate", "--config", str(ok), "-o", str(tmp_path / "o"), *FAST, "--lambda-s", "4"]) == 0


def test_missing_mask_fails_before_any_batch(src, tmp_path, capsys):
    (tmp_path / "masks").mkdir()
    assert (
        translate(src, tmp_path / "run", "--background-smoothing", "0.5", "--foreground-masks", str(tmp_path / "masks"))
        == 2
    )
    assert "no foreground mask for keyframes [0" in capsys.readouterr().err
    assert not list((tmp_path / "run").glob(".fresco/batch_*.pt"))


def test_variable_rate_input_keeps_its_timestamps(tmp_path):
    seconds = [0.0, 0.04, 0.08, 0.12, 0.4, 0.44, 0.48, 0.52, 0.9, 0.94]  # two stalls, as phones record
    src = write_test_video(
        tmp_path / "vfr.mp4", moving_square_clip(10, 64, 80, 20, (8, 20), (3, 1)), 25, timestamps=seconds
    )
    assert translate(src, tmp_path / "run") == 0
    with av.open(str(tmp_path / "run" / "video.mp4")) as c:
        assert [round(f.time, 6) for f in c.decode(c.streams.video[0])] == seconds
        assert c.streams.audio
    report = json.loads((tmp_path / "run" / "run.json").read_text())
    assert report["frames"] == 10 and report["frame_timing"].startswith("variable rate")


def test_stop_keeps_finished_batches_and_says_how_to_go_on(src, tmp_path, monkeypatch):
    from fresco_v2v.cli import build_parser, run_config_from_args
    from fresco_v2v.errors import Cancelled
    from fresco_v2v.runner import translate_video

    out = tmp_path / "run"
    args = build_parser().parse_args(["translate", str(src), "--prompt", "a painting", "-o", str(out), *FAST])
    cfg = run_config_from_args(args)
    steps_asked = []

    def stop_during_first_batch():  # asked once before the batch, then before each of its 2 denoising steps
        steps_asked.append(1)
        return len(steps_asked) == 3

    with pytest.raises(Cancelled, match="stopped before denoising step 2 of 2; no keyframe batch of .* had finished"):
        translate_video(cfg, progress=False, should_stop=stop_during_first_batch)
    assert not list(out.glob(".fresco/batch_*.pt"))

    def stop_after_first_batch():
        return (out / ".fresco" / "batch_0000.pt").is_file()

    with pytest.raises(Cancelled) as stopped:
        translate_video(cfg, progress=False, should_stop=stop_after_first_batch)
    saved = out / ".fresco" / "run-config.json"
    assert "1 of " in str(stopped.value) and f"fresco translate --config {saved}" in str(stopped.value)
    assert not (out / "video.mp4").exists()

    calls = []
    original = FrescoPipeline.__call__
    monkeypatch.setattr(FrescoPipeline, "__call__", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    assert main(["translate", "--config", str(saved), "--quiet"]) == 0  # goes on from the saved config alone
    batches = json.loads((out / "run.json").read_text())["batches"]
    assert len(calls) == len(batches) - 1  # the finished batch was not redone


def test_ctrl_c_says_where_the_finished_batches_are(src, tmp_path, monkeypatch, capsys):
    from fresco_v2v import runner

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "translate_video", interrupted)
    assert translate(src, tmp_path / "run") == 130
    assert capsys.readouterr().err == "fresco: interrupted (no keyframe batch had finished)\n"
    (tmp_path / "run" / ".fresco").mkdir(parents=True)
    (tmp_path / "run" / ".fresco" / "batch_0000.pt").write_bytes(b"")
    assert translate(src, tmp_path / "run", "--overwrite") == 130
    saved = tmp_path / "run" / ".fresco" / "run-config.json"
    err = capsys.readouterr().err  # the way on from them works whatever flags were given, --overwrite included
    assert f"1 keyframe batches are finished and kept in {tmp_path / 'run'}" in err and f"--config {saved}" in err


def test_keyframe_flow_in_the_report_and_resume_without_the_chain_file(src, tmp_path, monkeypatch):
    """Each consecutive-frame flow once a run, its time in run.json; a run resumed from a folder without the saved
    anchor chain rebuilds it and gives the same keyframes."""
    assert translate(src, tmp_path / "fresh") == 0
    report = json.loads((tmp_path / "fresh" / "run.json").read_text())
    kf = report["keyframe_flow"]
    keys = report["keyframes"]
    assert kf["backend"] == "dis-medium" and kf["frame_pairs"] == keys[-1] - keys[0] and kf["seconds"] > 0
    assert len(report["batches"]) >= 3 and abs(sum(kf["chosen"].values()) - 1) < 1e-3
    assert (tmp_path / "fresh" / ".fresco" / "keyframe-chain.pt").is_file()

    calls = []
    original = FrescoPipeline.__call__

    def stop_second(self, frames, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, frames, *a, **k)

    monkeypatch.setattr(FrescoPipeline, "__call__", stop_second)
    batches = report["batches"]
    for name, drop_chain in (("kept", False), ("dropped", True)):
        calls.clear()
        assert translate(src, tmp_path / name) == 130
        if drop_chain:  # as a folder of an older version would be
            (tmp_path / name / ".fresco" / "keyframe-chain.pt").unlink()
        monkeypatch.setattr(FrescoPipeline, "__call__", original)
        assert translate(src, tmp_path / name) == 0
        monkeypatch.setattr(FrescoPipeline, "__call__", stop_second)
        for p in (tmp_path / "fresh" / "keyframes").glob("*.png"):
            assert p.read_bytes() == (tmp_path / name / "keyframes" / p.name).read_bytes()
        pairs = json.loads((tmp_path / name / "run.json").read_text())["keyframe_flow"]["frame_pairs"]
        # with the chain file only the frames after batch 0 are read again; without it batch 0's flows are rebuilt
        assert pairs == keys[-1] - (keys[0] if drop_chain else batches[0][-1])


def test_gmflow_from_a_checkpoint_file_and_a_missing_one(src, tmp_path, capsys):
    import torch

    from fresco_v2v.flow.gmflow import GMFlow

    ckpt = tmp_path / "gmflow_random.pth"
    torch.save({"model": GMFlow().state_dict()}, ckpt)  # random weights: the flows are poor, the path is real
    assert translate(src, tmp_path / "run", "--flow", f"gmflow:{ckpt}") == 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["keyframe_flow"]["backend"] == f"gmflow:{ckpt}"
    capsys.readouterr()
    assert translate(src, tmp_path / "run2", "--flow", f"gmflow:{tmp_path / 'none.pth'}") == 2
    err = capsys.readouterr().err
    assert "none.pth: no such GMFlow checkpoint file" in err and "Traceback" not in err
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"input": str(src), "prompt": "a painting", "flow": "gmflow:"}))
    assert main(["translate", "--config", str(cfg), "-o", str(tmp_path / "run3"), *FAST]) == 2
    assert "flow: expected one of" in capsys.readouterr().err
    # a propagation flow backend that cannot be loaded fails before the first batch, not after all of them
    assert translate(src, tmp_path / "run4", "--propagation-option", f"flow=gmflow:{tmp_path / 'none.pth'}") == 2
    assert "no such GMFlow checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "run4").exists()


def test_controlnet_none_runs_the_unet_alone(src, tmp_path, monkeypatch):
    """--controlnet none (the authors' use_controlnet: False): no ControlNet is loaded, the UNet gets no residuals."""
    seen = []
    real = FrescoPipeline.predict_noise

    def spy(self, latents, t, emb, conds, scales, guidance_scale, *rest):
        seen.append((self.controlnet, len(conds), len(scales)))
        return real(self, latents, t, emb, conds, scales, guidance_scale, *rest)

    monkeypatch.setattr(FrescoPipeline, "predict_noise", spy)
    assert translate(src, tmp_path / "run", "--controlnet", "none") == 0
    assert seen and all(s == (None, 0, 0) for s in seen)
    assert read_video(tmp_path / "run" / "video.mp4", short_side=None).num_frames == 12


def test_killed_propagation_resumes_at_its_first_unfinished_chunk(src, tmp_path, monkeypatch):
    """A run killed while encoding its propagated chunks, rerun, encodes only the unfinished chunks, from frames
    identical to an uninterrupted run's, and its video.mp4 is the uninterrupted run's byte for byte."""
    from fresco_v2v import encode

    monkeypatch.setattr(encode, "CHUNK_FRAMES", 4)
    real = encode.write_video
    handed: dict[str, list[np.ndarray]] = {}

    def recording(path, frames, *a, **k):
        frames = [np.array(f) for f in frames]
        handed[path.name] = frames
        return real(path, frames, *a, **k)

    monkeypatch.setattr(encode, "write_video", recording)
    assert translate(src, tmp_path / "whole") == 0
    whole = dict(handed)
    handed.clear()

    def killed_at_third_chunk(path, frames, *a, **k):
        if len(handed) == 2:
            raise KeyboardInterrupt
        return recording(path, frames, *a, **k)

    monkeypatch.setattr(encode, "write_video", killed_at_third_chunk)
    assert translate(src, tmp_path / "run") == 130  # the CLI's answer to Ctrl-C
    chunks = sorted(p.name for p in (tmp_path / "run" / ".fresco" / "chunks").glob("*.mp4"))
    assert chunks == ["chunk_0000.mp4", "chunk_0001.mp4"] and not (tmp_path / "run" / "video.mp4").exists()
    handed.clear()
    monkeypatch.setattr(encode, "write_video", recording)
    assert translate(src, tmp_path / "run") == 0
    assert sorted(handed) == sorted(set(whole) - {"chunk_0000.mp4", "chunk_0001.mp4"})  # only the rest is made
    for name, frames in handed.items():
        assert len(frames) == len(whole[name]) and all(np.array_equal(a, b) for a, b in zip(frames, whole[name]))
    times = []
    for run in ("whole", "run"):
        with av.open(str(tmp_path / run / "video.mp4")) as c:
            times.append([f.pts for f in c.decode(c.streams.video[0])])
            assert c.streams.audio
    assert times[0] == times[1] and len(times[0]) == 12
    assert (tmp_path / "run" / "video.mp4").read_bytes() == (tmp_path / "whole" / "video.mp4").read_bytes()
    assert not (tmp_path / "run" / ".fresco" / "chunks").exists()  # deleted once the video is written


def test_short_disk_fails_before_any_work_with_needed_and_available(src, tmp_path, monkeypatch, capsys):
    import shutil as sh

    from fresco_v2v import run_folder, runner

    usage = sh.disk_usage(tmp_path)
    monkeypatch.setattr(run_folder.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    loaded = []
    monkeypatch.setattr(runner, "load_run_pipeline", lambda cfg: loaded.append(1))
    assert translate(src, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert re.search(r"needs about \d+\.\d MB of disk .* and 0\.0 MB are free", err), err
    assert not loaded and not (tmp_path / "run" / "keyframes" / "0000.png").exists()


def test_every_long_stage_shows_its_progress_out_of_a_known_total(src, tmp_path, monkeypatch):
    """Decoding, each keyframe batch (and its denoising), propagation per frame and assembling each show a bar
    with a total, so a rate and the time left (the web UI shows the same bars: gradio tracks tqdm)."""
    from tqdm.auto import tqdm

    from fresco_v2v import encode, pipeline, runner, video
    from fresco_v2v.propagate import segments

    closed = []

    class Recording(tqdm):
        def close(self):
            if not self.disable:
                closed.append((self.desc, self.total, self.n))
            super().close()

    for module in (video, runner, segments, pipeline, encode):
        monkeypatch.setattr(module, "tqdm", Recording)
    loud = [a for a in FAST if a != "--quiet"]
    assert main(["translate", str(src), "--prompt", "a painting", "-o", str(tmp_path / "run"), *loud]) == 0
    stages = {}
    for desc, total, n in closed:
        stages.setdefault(desc, []).append((total, n))
    assert {"reading frames", "keyframe batches", "denoising", "propagating", "assembling"} <= set(stages)
    for desc in ("reading frames", "keyframe batches", "propagating", "assembling"):
        assert all(total and total == n for total, n in stages[desc]), (desc, stages[desc])
    assert stages["reading frames"] == [(12, 12)] and stages["propagating"][0][0] == 12 - len(
        json.loads((tmp_path / "run" / "run.json").read_text())["keyframes"]
    )
    closed.clear()
    assert translate(src, tmp_path / "quiet") == 0 and not closed  # --quiet: no bars at all
