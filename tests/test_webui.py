"""`fresco ui`: the form's values become the CLI's RunConfig; a run on the tiny model (noise-like output by design)
writes the usual output folder; the pipeline is reused while it can be; the page builds and serves a run."""

import json
import os
import re
from fractions import Fraction
from pathlib import Path

import pytest

from fresco_v2v import runner
from fresco_v2v.cli import main
from fresco_v2v.config import DEFAULT_NEGATIVE_PROMPT
from fresco_v2v.errors import Cancelled, ConfigError, InputError, ModelNotFound
from fresco_v2v.pipeline import FrescoPipeline
from fresco_v2v.testing import moving_square_clip, write_test_video
from fresco_v2v.video import read_video
from fresco_v2v.webui import (
    KEYS_SIZE,
    FormValues,
    WebSession,
    form_config,
    parse_keyframe_prompts,
    parse_more_options,
    run_folder,
)

FAST = dict(model="tiny", steps=2.0, strength=1.0, resolution=64.0, max_frames=0, controlnet="canny")
SMALL = "s_min: 2\ns_max: 4\nbatch_size: 3\n"


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    d = tmp_path_factory.mktemp("in")
    return write_test_video(d / "in.mp4", moving_square_clip(8, 64, 80, 20, (8, 20), (3, 1)), Fraction(25))


def form(src, **kw) -> FormValues:
    return FormValues(**({"video": str(src), "prompt": "a painting", "more_options": SMALL} | FAST | kw))


def test_keyframe_prompts_lines():
    assert parse_keyframe_prompts("0: spring\n\n 12 :summer \n2.5s: winter at night") == {
        0: "spring",
        12: "summer",
        "2.5s": "winter at night",
    }
    with pytest.raises(ConfigError, match=r"keyframe_prompts: .*line 2.*'twelve: x'"):
        parse_keyframe_prompts("0: a\ntwelve: x")
    with pytest.raises(ConfigError, match=r"keyframe_prompts: .*line 2 repeats 3"):
        parse_keyframe_prompts("3: a\n3: b")


def test_more_options():
    assert parse_more_options("") == {} and parse_more_options("# only a comment\n") == {}
    assert parse_more_options("colorize: true\nfresco: {optimization: {iterations: 3}}") == {
        "colorize": True,
        "fresco": {"optimization": {"iterations": 3}},
    }
    with pytest.raises(ConfigError, match=r"more options: .*did you mean 'colorize'\?.*'colour'"):
        parse_more_options("colour: true")
    with pytest.raises(ConfigError, match="more options: .*set this one on the form.*'prompt'"):
        parse_more_options("prompt: x")
    with pytest.raises(ConfigError, match="more options: expected a YAML mapping"):
        parse_more_options("- a list")
    with pytest.raises(ConfigError, match="invalid YAML"):
        parse_more_options("a: [")


def test_form_config_types_and_errors(src, tmp_path):
    cfg = form_config(form(src, loras="a.safetensors:0.5\n\n b.safetensors ", keyframe_prompts="3: x"), tmp_path)
    assert (cfg.steps, cfg.resolution, cfg.max_frames, cfg.seed) == (2, 64, None, 0)
    assert cfg.lora == ("a.safetensors:0.5", "b.safetensors") and cfg.keyframe_prompts == {3: "x"}
    assert (cfg.s_min, cfg.s_max, cfg.batch_size, cfg.output) == (2, 4, 3, str(tmp_path))
    assert form_config(form(src, max_frames=5.0), tmp_path).max_frames == 5
    opts = form_config(form(src, more_options="propagation_options: {colour_lookup: true}"), tmp_path)
    assert opts.propagation_config().colour_lookup is True
    with pytest.raises(ConfigError, match="propagation_options.colour_lookup"):
        form_config(form(src, more_options="propagation_options: {colour_lookup: 'yes'}"), tmp_path)
    assert (
        form_config(form(src, more_options="flow: gmflow:/ckpt/gmflow.pth"), tmp_path).flow == "gmflow:/ckpt/gmflow.pth"
    )
    with pytest.raises(ConfigError, match="flow: expected one of"):
        form_config(form(src, more_options="flow: raft"), tmp_path)
    with pytest.raises(ConfigError, match=r"steps: expected a whole number, got 2\.5"):
        form_config(form(src, steps=2.5), tmp_path)
    with pytest.raises(ConfigError, match="strength: expected a number in"):
        form_config(form(src, strength=0.0), tmp_path)
    with pytest.raises(ConfigError, match="prompt: expected a non-empty text"):
        form_config(form(src, prompt="  "), tmp_path)
    with pytest.raises(InputError, match="upload a video"):
        form_config(form(src, video=None), tmp_path)
    for name in ("seed", "max_frames", "resolution", "steps"):  # a cleared field is refused, not defaulted
        with pytest.raises(ConfigError, match=f"{name}: expected a whole number, got None"):
            form_config(form(src, **{name: None}), tmp_path)
    with pytest.raises(ConfigError, match="strength: expected a number, got None"):
        form_config(form(src, strength=None), tmp_path)
    with pytest.raises(ConfigError, match="model: expected a text, got None"):
        form_config(form(src, model=None), tmp_path)


def test_run_folder_is_new_each_time(tmp_path):
    first = run_folder(tmp_path, "A Watercolor, dog!", now=0)
    assert first.name.endswith("-a-watercolor-dog") and first.parent == tmp_path
    first.mkdir()
    second = run_folder(tmp_path, "A Watercolor, dog!", now=0)
    assert second.name == first.name + "-2"
    assert run_folder(tmp_path, "???", now=0).name.endswith("-run")


def test_session_runs_and_reuses_the_pipeline(src, tmp_path, monkeypatch):
    loads = []
    real = runner.load_run_pipeline

    def counting(cfg):
        loads.append(cfg.model)
        return real(cfg)

    monkeypatch.setattr(runner, "load_run_pipeline", counting)
    session = WebSession(tmp_path)
    out = session.translate(form(src), progress=False)
    folder = Path(out.video).parent
    assert folder.parent == tmp_path and Path(out.video).is_file()
    report = json.loads((folder / "run.json").read_text())
    assert out.report == report and report["frames"] == 8
    assert [c for _, c in out.keyframes] == [f"frame {k}" for k in report["keyframes"]]
    assert all(Path(p).is_file() for p, _ in out.keyframes)
    assert "noise-like" in out.message and str(folder) in out.message
    assert report["input"] == str(folder / "input.mp4") and (folder / "input.mp4").read_bytes() == src.read_bytes()
    second = session.translate(form(src, prompt="a pencil drawing", strength=0.5), progress=False)
    assert Path(second.video).parent != folder  # a new folder: the first run is kept
    assert loads == ["tiny"]  # same model, ControlNets, LoRAs, device: loaded once
    session.translate(form(src, seed=1.0), progress=False)  # the tiny model's weights depend on the seed
    assert loads == ["tiny", "tiny"]


def test_failed_run_leaves_no_folder_unless_a_batch_finished(src, tmp_path, monkeypatch):
    bad = tmp_path / "in" / "notes.mp4"
    bad.parent.mkdir()
    bad.write_text("not a video")
    runs = tmp_path / "runs"
    session = WebSession(runs)
    session.pipeline = lambda cfg: pytest.fail("the model is loaded after the video is read, so never here")
    with pytest.raises(InputError, match="not a video file"):
        session.translate(form(bad), progress=False)
    assert not runs.exists() or not any(runs.iterdir())
    with pytest.raises(ConfigError, match="allow_pickle: expected false on the page"):
        session.translate(form(src, more_options="allow_pickle: true"), progress=False)
    assert not runs.exists() or not any(runs.iterdir())
    with pytest.raises(ModelNotFound, match="no such GMFlow checkpoint"):  # before any model is loaded
        session.translate(form(src, more_options=f"flow: gmflow:{tmp_path / 'none.pth'}"), progress=False)
    assert not runs.exists() or not any(runs.iterdir())

    runs.mkdir(exist_ok=True)
    runs.chmod(0o500)  # the output root is not writable
    try:
        if not os.access(runs, os.W_OK):  # (root ignores the mode)
            with pytest.raises(InputError, match="cannot save the run there"):
                WebSession(runs).translate(form(src), progress=False)
    finally:
        runs.chmod(0o700)

    def fail_second_batch(self, frames, *a, **k):  # the first batch is saved, then the run fails
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("boom")
        return real(self, frames, *a, **k)

    calls, real = [], FrescoPipeline.__call__
    monkeypatch.setattr(FrescoPipeline, "__call__", fail_second_batch)
    with pytest.raises(RuntimeError, match="boom"):
        WebSession(runs).translate(form(src), progress=False)
    (kept,) = runs.iterdir()  # kept: `fresco translate --config` can resume from its finished batch
    assert list((kept / ".fresco").glob("batch_*.pt")) and (kept / "input.mp4").is_file()


def test_launch_serves_no_run_folder_and_limits_uploads(tmp_path, monkeypatch):
    gr = pytest.importorskip("gradio")
    from fresco_v2v.webui_page import launch

    seen = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: seen.update(kw))
    launch(port=1234, output_root=tmp_path / "runs")
    assert "allowed_paths" not in seen and seen["blocked_paths"] == [str((tmp_path / "runs").resolve())]
    assert seen["max_file_size"] == "2000mb" and seen["server_port"] == 1234
    (guard,) = seen["app_kwargs"]["middleware"]  # the visitor cookie and who may fetch the shown files
    assert guard.kwargs["private_roots"] == ((tmp_path / "runs").resolve(),)
    with pytest.raises(ConfigError, match="output_root: expected a folder apart from gradio's upload folder"):
        launch(output_root=Path(gr.utils.get_upload_folder()).parent)  # would block every upload


def test_page_builds_and_reports_errors(src, tmp_path, monkeypatch):
    gr = pytest.importorskip("gradio")
    from fresco_v2v.webui_page import build_app

    session = WebSession(tmp_path)
    app = build_app(session)
    (fn,) = [f.fn for f in app.fns.values() if f.name == "on_run"]
    fields = {c.label: c for c in app.blocks.values() if getattr(c, "label", None)}
    values = {c: None for c in app.blocks.values()}  # as sent for components in never-opened accordions
    values[fields["Prompt"]] = "a painting"
    steps = fn(values)
    assert next(steps) == ("Running…", None, None, None)  # the previous result is cleared first
    with pytest.warns(UserWarning, match="upload a video"):  # gradio's toast, outside a page
        assert next(steps) == ("**Error:** no video: upload a video first", None, None, None)  # the status says why
    with pytest.raises(StopIteration):
        next(steps)

    seen = []
    monkeypatch.setattr(session, "translate", lambda form, visitor=None: seen.append(form) or 1 / 0)
    values[fields["Input video"]] = str(src)
    steps = fn(values)
    next(steps)
    assert next(steps)[0].startswith("**Failed:** ZeroDivisionError")
    with pytest.raises(gr.Error, match="ZeroDivisionError"):
        next(steps)
    (form,) = seen  # None from unopened sections means the defaults, not empty text
    assert form.negative_prompt == DEFAULT_NEGATIVE_PROMPT and form.keyframe_prompts == "" and form.more_options == ""


def test_ui_command_without_gradio(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    assert main(["ui"]) == 2
    assert "pip install 'fresco-v2v[ui]'" in capsys.readouterr().err


def test_served_page_runs_a_translation(src, tmp_path):
    """Through HTTP, as a browser or a script does it: upload, run, get the video, keyframes and report back."""
    pytest.importorskip("gradio")
    client_mod = pytest.importorskip("gradio_client")
    from fresco_v2v.webui_page import build_app

    app = build_app(WebSession(tmp_path))
    app.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, show_error=True)
    try:
        client = client_mod.Client(app.local_url, verbose=False)
        video = client_mod.handle_file(str(src))
        # in page order: video, prompt, model, strength, steps, guidance, seed, short side, max frames,
        # keyframe prompts, negative, added, LoRAs, ControlNet, more options, IP-Adapter, style image
        import cv2
        import numpy as np

        cv2.imwrite(str(tmp_path.parent / "style.png"), np.full((32, 32, 3), (40, 90, 200), np.uint8))
        style = client_mod.handle_file(str(tmp_path.parent / "style.png"))
        args = [video, "a painting", "tiny", 1.0, 2, 7.5, 0, 128, 6, "2: at night", "", "", "", "canny", SMALL]
        args += ["tiny", style]
        message, result, gallery, report = client.predict(*args, api_name="/translate")
        assert report["frames"] == 6 and report["config"]["keyframe_prompts"] == {"2": "at night"}
        assert report["config"]["ip_adapter"] == "tiny" and report["config"]["style_image"].endswith("style.png")
        assert Path(result).is_file() and len(gallery) == len(report["keyframes"]) and "noise-like" in message
        assert len(list(tmp_path.iterdir())) == 1
        # the second tab: those keyframes (named by frame index) propagated again
        keys = [client_mod.handle_file(g["image"]) for g in gallery]
        message, result = client.predict(video, keys, 128, "workers: 1", api_name="/propagate")
        assert message.startswith("**8 frames** at 25 fps") and Path(result).is_file()  # the whole clip
        args[1] = " "
        message, result, gallery, report = client.predict(*args, api_name="/translate")
        assert message == "**Error:** prompt: expected a non-empty text, got ' '" and report is None
    finally:
        app.close()


def test_propagate_own_keyframes(src, tmp_path):
    session = WebSession(tmp_path / "runs")
    done = session.translate(form(src), progress=False)
    keys = [p for p, _ in done.keyframes]
    out = session.propagate(str(src), keys, KEYS_SIZE, progress=False)  # the keys' short side: 64
    folder = Path(out.video).parent
    assert read_video(out.video, short_side=None).num_frames == 8 and "**8 frames** at 25 fps" in out.message
    assert sorted(p.name for p in (folder / "keyframes").iterdir()) == sorted(Path(k).name for k in keys)
    assert (folder / "input.mp4").is_file()
    report = json.loads((folder / "run.json").read_text())
    assert report["input"] == "in.mp4" and report["frames"] == 8
    assert report["keyframes"] == [int(Path(k).stem) for k in keys]
    again = session.propagate(str(src), [*keys, str(tmp_path / "cover.webp")], 64.0, progress=False).message
    assert again.startswith("**8 frames**") and again.endswith("Ignored (not named by frame index): cover.webp.")
    with pytest.raises(InputError, match="no keyframes: .*named by frame index.*got notes.txt"):
        session.propagate(str(src), [str(tmp_path / "notes.txt")], 64, progress=False)
    # the Options box: PropagationConfig fields, kept in run.json; a wrong one fails before a folder is made
    runs = sorted((tmp_path / "runs").iterdir())
    opts = session.propagate(str(src), keys, 64, "colour_lookup: true  # flat colours\nworkers: 1", progress=False)
    assert json.loads((Path(opts.video).parent / "run.json").read_text())["options"] == {
        "colour_lookup": True,
        "workers": 1,
    }
    for bad, match in [
        ("colour_lookup: 'yes'", "options.colour_lookup: expected true, false or 'auto', got the string 'yes'"),
        ("colour_lokup: true", "did you mean 'colour_lookup'"),
        ("[colour_lookup]", "options: expected a YAML mapping"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(match)):
            session.propagate(str(src), keys, 64, bad, progress=False)
    assert len(sorted((tmp_path / "runs").iterdir())) == len(runs) + 1
    with pytest.raises(InputError, match=r"/0000\.png: is 64x64, the video frames are 128x128"):  # names the upload
        session.propagate(str(src), keys, 128, progress=False)
    assert len(list((tmp_path / "runs").iterdir())) == 4  # the failed run left nothing
    with pytest.raises(InputError, match="upload a video"):
        session.propagate(None, keys, 64, progress=False)


def test_stop_ends_the_running_run_and_keeps_its_finished_batches(src, tmp_path, monkeypatch):
    session = WebSession(tmp_path / "runs")
    assert session.stop() is False  # nothing running: nothing to stop, and nothing remembered for the next run
    calls, real = [], FrescoPipeline.__call__

    def click_stop_during_second_batch(self, frames, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            assert session.stop() is True
        return real(self, frames, *a, **k)

    monkeypatch.setattr(FrescoPipeline, "__call__", click_stop_during_second_batch)
    with pytest.raises(Cancelled, match="stopped before denoising step 1 of 2; 1 of .* To go on from them"):
        session.translate(form(src), progress=False)
    (kept,) = (tmp_path / "runs").iterdir()
    assert list((kept / ".fresco").glob("batch_*.pt")) and (kept / ".fresco" / "run-config.json").is_file()
    done = session.translate(form(src), progress=False)  # the next run starts with the request cleared
    assert Path(done.video).is_file()


def test_stop_button_and_the_stopped_status(src, tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    from fresco_v2v.webui_page import NOTHING_TO_STOP, STOPPING, build_app

    session = WebSession(tmp_path)
    app = build_app(session)
    stops = [f.fn for f in app.fns.values() if f.name == "on_stop"]  # the Translate tab's, the Propagate tab's
    assert len(stops) == 2 and stops[0]() == NOTHING_TO_STOP
    with session._stoppable("propagate") as request:  # as while a propagation runs
        assert stops[0]() == NOTHING_TO_STOP and not request.is_set()  # the other tab's Stop leaves it alone
        assert stops[1]() == STOPPING and request.is_set()
    assert stops[1]() == NOTHING_TO_STOP  # and a later run does not inherit it
    (fn,) = [f.fn for f in app.fns.values() if f.name == "on_run"]
    fields = {c.label: c for c in app.blocks.values() if getattr(c, "label", None)}
    values = {c: None for c in app.blocks.values()}
    values[fields["Prompt"]], values[fields["Input video"]] = "a painting", str(src)

    def stopped(form, visitor=None):
        raise Cancelled("stopped before denoising step 3 of 20; 1 of 4 keyframe batches are finished")

    monkeypatch.setattr(session, "translate", stopped)
    steps = list(fn(values))
    assert steps[-1] == ("**Stopped.** stopped before denoising step 3 of 20; 1 of 4 keyframe batches are finished",
                         None, None, None)  # fmt: skip


def test_served_stop_does_not_wait_behind_the_run(src, tmp_path, monkeypatch):
    """Through HTTP: /stop is answered while /translate still runs (the queue's limit of one does not hold it)."""
    pytest.importorskip("gradio")
    client_mod = pytest.importorskip("gradio_client")
    import threading

    from fresco_v2v.webui_page import STOPPING, build_app

    session = WebSession(tmp_path)
    started, real = threading.Event(), FrescoPipeline.__call__

    def wait_for_stop(self, *a, **k):  # a batch that only ends when Stop arrives
        started.set()
        assert session._running[-1].wait(60), "/stop never reached the running run"
        return real(self, *a, **k)

    monkeypatch.setattr(FrescoPipeline, "__call__", wait_for_stop)
    app = build_app(session)
    app.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, show_error=True)
    try:
        client = client_mod.Client(app.local_url, verbose=False)
        video = client_mod.handle_file(str(src))
        args = [video, "a painting", "tiny", 1.0, 2, 7.5, 0, 128, 6, "", "", "", "", "canny", SMALL, "", None]
        job = client.submit(*args, api_name="/translate")
        assert started.wait(60)
        assert client.predict(api_name="/stop") == STOPPING
        message = job.result(timeout=60)[0]
        assert message.startswith("**Stopped.** stopped before denoising step 1 of 2; no keyframe batch of ")
        assert message.endswith("had finished, so there is nothing to go on from") and not list(tmp_path.iterdir())
    finally:
        app.close()


def test_serving_beyond_this_machine_needs_a_login_or_no_auth(tmp_path, monkeypatch, capsys):
    pytest.importorskip("gradio")
    from fresco_v2v import webui_page
    from fresco_v2v.cli import main

    launched = []
    monkeypatch.setattr(webui_page, "launch", lambda *a, **k: launched.append((a, k)))
    root = ["--output-root", str(tmp_path / "runs")]
    for exposed in (["--host", "0.0.0.0"], ["--share"]):
        assert main(["ui", *exposed, *root]) == 2
        assert "--auth USER:PASSWORD (or --no-auth)" in capsys.readouterr().err
    assert not launched
    assert main(["ui", "--host", "0.0.0.0", "--auth", "alice:s3:cret", *root]) == 0
    assert launched[-1][1]["auth"] == ("alice", "s3:cret") and "without a login" not in capsys.readouterr().out
    assert main(["ui", "--share", "--no-auth", *root]) == 0
    assert launched[-1][1]["auth"] is None and "without a login (--no-auth)" in capsys.readouterr().out
    assert main(["ui", *root]) == 0  # this machine only: no login needed
    assert launched[-1][1]["auth"] is None and "warning" not in capsys.readouterr().out
    assert main(["ui", "--host", "0.0.0.0", "--auth", "alice:", *root]) == 2
    assert "auth: expected USER:PASSWORD" in capsys.readouterr().err
    assert main(["ui", "--host", "0.0.0.0", "--no-auth", "--models-root", str(tmp_path), *root]) == 0
    kw = launched[-1][1]
    assert kw["public"] and kw["models_root"] == str(tmp_path) and kw["max_upload_mb"] == 2000
    assert main(["ui", *root]) == 0 and not launched[-1][1]["public"]
    assert main(["ui", "--max-upload-mb", "0", *root]) == 2 and "max_upload_mb" in capsys.readouterr().err
    assert main(["ui", "--models-root", str(tmp_path / "none"), *root]) == 2
    assert "models_root: expected an existing folder" in capsys.readouterr().err


def test_launch_hands_the_login_to_gradio(tmp_path, monkeypatch):
    gr = pytest.importorskip("gradio")
    from fresco_v2v.webui_page import launch

    seen = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: seen.update(kw))
    launch(host="0.0.0.0", output_root=tmp_path / "runs", auth=("alice", "pw"))
    assert seen["auth"] == ("alice", "pw") and seen["server_name"] == "0.0.0.0"


def test_the_model_field_takes_tiny_xl_and_sdxl_ids(src, tmp_path):
    """The page assumes no SD1.5: the SDXL-layout stack runs from the form, and an SDXL hub id is a model like any."""
    from fresco_v2v.webui_access import confine_paths

    session = WebSession(tmp_path)
    out = session.translate(form(src, model="tiny-xl"), progress=False)
    report = json.loads((Path(out.video).parent / "run.json").read_text())
    assert report["config"]["model"] == "tiny-xl" and "tiny-xl" in report["note"] and Path(out.video).is_file()
    cfg = form_config(form(src, model="stabilityai/stable-diffusion-xl-base-1.0"), tmp_path / "o")
    assert confine_paths(cfg, None).model == "stabilityai/stable-diffusion-xl-base-1.0"


def test_form_takes_an_ip_adapter_and_a_style_image_upload(src, tmp_path):
    import cv2
    import numpy as np

    style = tmp_path / "upload" / "my style.png"  # as gradio keeps an upload
    style.parent.mkdir()
    cv2.imwrite(str(style), np.full((32, 32, 3), 200, np.uint8))
    cfg = form_config(form(src, ip_adapter=" tiny:0.8 ", style_image=str(style)), tmp_path)
    assert (cfg.ip_adapter, cfg.ip_adapter_scale, cfg.style_image) == ("tiny:0.8", 0.8, str(style))
    assert form_config(form(src), tmp_path).ip_adapter is None  # an empty field: none
    with pytest.raises(ConfigError, match="style_image: expected a style image"):
        form_config(form(src, ip_adapter="tiny"), tmp_path)
    with pytest.raises(ConfigError, match="more options: .*set this one on the form.*'style_image'"):
        parse_more_options("style_image: a.png")
    more = "ip_adapter_image_encoder: h94/IP-Adapter/models/image_encoder\nstyle_images: {2: b.png}"
    cfg = form_config(form(src, ip_adapter="tiny", more_options=SMALL + more), tmp_path)
    assert cfg.style_images == {2: "b.png"} and cfg.ip_adapter_image_encoder == "h94/IP-Adapter/models/image_encoder"

    out = WebSession(tmp_path / "runs").translate(form(src, ip_adapter="tiny", style_image=str(style)), progress=False)
    folder = Path(out.video).parent
    report = json.loads((folder / "run.json").read_text())
    kept = folder / "style.png"  # kept with the run, as the input is: a resume does not need gradio's cache
    assert report["config"]["style_image"] == str(kept) and kept.read_bytes() == style.read_bytes()
    assert report["config"]["ip_adapter"] == "tiny" and len(out.keyframes) == len(report["keyframes"])


def test_page_has_the_ip_adapter_field_and_the_style_upload(src, tmp_path, monkeypatch):
    gr = pytest.importorskip("gradio")
    from fresco_v2v.webui_page import build_app

    session = WebSession(tmp_path)
    app = build_app(session)
    (fn,) = [f.fn for f in app.fns.values() if f.name == "on_run"]
    fields = {c.label: c for c in app.blocks.values() if getattr(c, "label", None)}
    assert isinstance(fields["Style image"], gr.Image) and fields["Style image"].type == "filepath"
    values = {c: None for c in app.blocks.values()}
    values.update({fields["Prompt"]: "a painting", fields["Input video"]: str(src)})
    seen = []
    monkeypatch.setattr(session, "translate", lambda form, visitor=None: seen.append(form) or 1 / 0)
    with pytest.raises(gr.Error):
        list(fn(values))
    assert (seen[-1].ip_adapter, seen[-1].style_image) == ("", None)  # a never-opened section: the defaults
    values.update({fields["IP-Adapter"]: "h94/IP-Adapter:0.6", fields["Style image"]: "/uploads/style.png"})
    with pytest.raises(gr.Error):
        list(fn(values))
    assert (seen[-1].ip_adapter, seen[-1].style_image) == ("h94/IP-Adapter:0.6", "/uploads/style.png")
