"""`fresco ui`: a browser page over :func:`fresco_v2v.runner.translate_video` and
:func:`fresco_v2v.propagate.run.propagate_video`.

A thin layer, like the CLI: the form's values become the same :class:`~fresco_v2v.config.RunConfig` that
`fresco translate` builds (same names, same validation, same errors), and every run writes the same output folder
(video with the input's rate and audio, keyframes, run.json), a new one per run under ``output_root``, so nothing
is overwritten. Options that are not on the form go in the "More options" box as YAML, with the names of a
`--config` file.

Gradio is an optional dependency (``pip install 'fresco-v2v[ui]'``); only :func:`build_app` and :func:`launch`
import it, so the form logic below is usable and testable without it.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from .config import (
    DEFAULT_ADDED_PROMPT,
    DEFAULT_MODEL,
    DEFAULT_NEGATIVE_PROMPT,
    RunConfig,
    names_expected,
    propagation_config,
    to_dict,
)
from .errors import Cancelled, ConfigError, FrescoError, InputError

logger = logging.getLogger(__name__)

#: Short sides offered on the form: multiples of 64 (``RunConfig.resolution``); 512 is the paper's (§4), 128 the
#: toy-world model's.
RESOLUTIONS = tuple(range(128, 1025, 64))
#: The RunConfig fields the form shows; "More options" may set any other field.
FORM_FIELDS = (
    "input",
    "prompt",
    "negative_prompt",
    "added_prompt",
    "model",
    "lora",
    "controlnet",
    "keyframe_prompts",
    "strength",
    "steps",
    "guidance_scale",
    "seed",
    "resolution",
    "max_frames",
    "output",
)
#: The form fields in its folded sections (sent as None until a section is opened).
FOLDED = ("keyframe_prompts", "negative_prompt", "added_prompt", "loras", "controlnet", "more_options")
_DEFAULTS = RunConfig(input="", prompt="")
#: The propagate tab's default short side: the keyframes' own.
KEYS_SIZE = "the keyframes' own"


@dataclass
class FormValues:
    """What the form holds, as typed values (the browser sends numbers as floats; they are checked here)."""

    video: str | None
    prompt: str
    negative_prompt: str = _DEFAULTS.negative_prompt
    added_prompt: str = _DEFAULTS.added_prompt
    model: str = _DEFAULTS.model
    loras: str = ""  # one "PATH[:SCALE]" per line
    controlnet: str = "canny"
    keyframe_prompts: str = ""  # one "FRAME: text" or "SECONDSs: text" per line
    strength: float = _DEFAULTS.strength
    steps: int | float = _DEFAULTS.steps
    guidance_scale: float = _DEFAULTS.guidance_scale
    seed: int | float = _DEFAULTS.seed
    resolution: int | float = _DEFAULTS.resolution
    max_frames: int | float = 0  # 0: every frame
    more_options: str = ""  # YAML mapping of other RunConfig fields


def _whole(name: str, value) -> int:
    """A whole number from the browser (which sends 20.0 for 20); 20.5 or a cleared field (None) is refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
        raise ConfigError(name, "a whole number", value)
    return int(value)


def parse_keyframe_prompts(text: str) -> dict:
    """'12: a red car' / '2.5s: at night' lines -> {12: 'a red car', '2.5s': 'at night'} (``keyframe_prompts``)."""
    out: dict = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = re.fullmatch(r"\s*(\d+|\d+(?:\.\d+)?s)\s*:\s*(.*\S)\s*", line)
        if m is None:
            raise ConfigError("keyframe_prompts", f"lines 'FRAME: text' or 'SECONDSs: text' (line {n})", line.strip())
        key = int(m.group(1)) if m.group(1).isdigit() else m.group(1)
        if key in out:
            raise ConfigError("keyframe_prompts", f"one line per frame or time (line {n} repeats {key})", line.strip())
        out[key] = m.group(2)
    return out


def _yaml_mapping(text: str, box: str) -> dict:
    """A YAML box's text as a mapping of option names to values ({} when empty or only comments)."""
    if not text.strip():
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(box, "a YAML mapping of option names to values", f"invalid YAML ({e})") from None
    if data is None:  # only comments
        return {}
    if not isinstance(data, dict):
        raise ConfigError(box, "a YAML mapping of option names to values", data)
    return data


def parse_propagation_options(text: str) -> dict:
    """The Propagate tab's Options YAML: ``PropagationConfig`` fields by name (checked by ``propagate_video``)."""
    return _yaml_mapping(text or "", "options")


def parse_more_options(text: str) -> dict:
    """The "More options" YAML: a mapping of RunConfig fields that are not on the form."""
    data = _yaml_mapping(text, "more options")
    known = set(to_dict(_DEFAULTS))
    for name in data:
        if name not in known:
            raise ConfigError("more options", f"option names of a --config file: {names_expected([name], known)}", name)
        if name in FORM_FIELDS:
            raise ConfigError("more options", "options that are not on the form (set this one on the form)", name)
    return data


def run_folder(output_root: str | Path, prompt: str, now: float | None = None) -> Path:
    """A new folder for one run: OUTPUT_ROOT/YYYYmmdd-HHMMSS-prompt-words (a suffix when taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    slug = "-".join(re.findall(r"[a-z0-9]+", prompt.lower())[:6])[:48] or "run"
    base = Path(output_root) / f"{stamp}-{slug}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def form_config(form: FormValues, output: str | Path) -> RunConfig:
    """The RunConfig of a filled form, validated (a ConfigError names the field, as on the command line)."""
    if not form.video:
        raise InputError("no video: upload a video first")
    for name in ("prompt", "model", "negative_prompt", "added_prompt", "loras", "controlnet", "keyframe_prompts"):
        if not isinstance(getattr(form, name), str):
            raise ConfigError(name, "a text", getattr(form, name))
    for name in ("strength", "guidance_scale"):
        value = getattr(form, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(name, "a number", value)
    data = to_dict(_DEFAULTS) | parse_more_options(form.more_options)
    max_frames = None if form.max_frames == 0 else _whole("max_frames", form.max_frames)
    lora = tuple(line.strip() for line in form.loras.splitlines() if line.strip())
    controlnet = tuple(c.strip() for c in form.controlnet.split(",") if c.strip())
    data.update(
        input=str(form.video),
        prompt=form.prompt,
        negative_prompt=form.negative_prompt,
        added_prompt=form.added_prompt,
        model=form.model.strip(),
        lora=list(lora),
        controlnet=list(controlnet),
        keyframe_prompts=parse_keyframe_prompts(form.keyframe_prompts),
        strength=form.strength,
        steps=_whole("steps", form.steps),
        guidance_scale=form.guidance_scale,
        seed=_whole("seed", form.seed),
        resolution=_whole("resolution", form.resolution),
        max_frames=max_frames,
        output=str(output),
    )
    return RunConfig.from_dict(data).validate()


@dataclass
class RunOutput:
    """What the page shows after a run."""

    video: str | None
    keyframes: list[tuple[str, str]]  # (png path, caption)
    report: dict
    message: str


@dataclass
class WebSession:
    """One server's state: where runs go, and the last loaded pipeline (reused while its signature holds).

    Loading SD1.5 and its ControlNet takes from seconds to minutes; a user who changes only the prompt or the
    strength should not wait for it again. Runs are serialized (one consumer GPU): the lock, and the queue's
    concurrency limit of 1 in :func:`build_app`. :meth:`stop` asks the running run to stop (it checks between
    denoising steps and propagated frames); each run has its own stop request, so a Stop never reaches a later run.
    """

    output_root: Path = Path("fresco-ui-runs")
    _pipeline: object = None
    _signature: tuple | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop_lock: threading.Lock = field(default_factory=threading.Lock)
    _running: tuple[str, threading.Event] | None = None  # (kind, its stop request) of the run holding _lock

    def stop(self, kind: str | None = None) -> bool:
        """Ask the running run ("translate" or "propagate"; None: either) to stop; False when there is none."""
        with self._stop_lock:
            if self._running is None or kind not in (None, self._running[0]):
                return False
            self._running[1].set()
            return True

    @contextmanager
    def _stoppable(self, kind: str) -> Iterator[threading.Event]:
        """A run's stop request, visible to :meth:`stop` while the run lasts."""
        request = threading.Event()
        with self._stop_lock:
            self._running = (kind, request)
        try:
            yield request
        finally:
            with self._stop_lock:
                self._running = None

    def pipeline(self, cfg: RunConfig):
        """The loaded pipeline for ``cfg``: the cached one while its signature holds, else a fresh load."""
        from . import runner

        sig = runner.pipeline_signature(cfg)
        if self._signature != sig:
            self._pipeline = self._signature = None  # free the old one before loading the next
            logger.info("loading the pipeline for %s", cfg.model)
            self._pipeline, self._signature = runner.load_run_pipeline(cfg), sig
        return self._pipeline

    def translate(self, form: FormValues, progress: bool = True) -> RunOutput:
        from .models import model_note
        from .run_folder import STATE_DIR
        from .runner import rate_text, translate_video

        with self._lock, self._stoppable("translate") as stop:
            folder = run_folder(self.output_root, form.prompt)
            cfg = form_config(form, folder)
            if cfg.allow_pickle:
                raise ConfigError(
                    "allow_pickle",
                    "false on the page (a pickle checkpoint runs code on the server when loaded; convert it to "
                    ".safetensors, or run it with `fresco translate --allow-pickle`)",
                    cfg.allow_pickle,
                )
            upload = Path(cfg.input)
            try:
                if upload.is_file():  # the upload lives in gradio's temporary cache: keep a copy with the run
                    kept = folder / f"input{upload.suffix.lower()}"
                    _save(folder.mkdir, folder, parents=True)
                    _save(shutil.copyfile, folder, upload, kept)
                    cfg = replace(cfg, input=str(kept))
                # The model is loaded by translate_video once the video has been read: bad input fails first.
                result = translate_video(cfg, progress=progress, load_pipeline=self.pipeline, should_stop=stop.is_set)
            except BaseException:
                if folder.is_dir() and not any((folder / STATE_DIR).glob("batch_*.pt")):
                    shutil.rmtree(folder, ignore_errors=True)  # nothing worth keeping: only the input's copy
                raise
        r = result.report
        keyframes = [
            (str(result.output_dir / "keyframes" / f"{k:04d}.png"), f"frame {k}")
            for k in result.keyframes
            if (result.output_dir / "keyframes" / f"{k:04d}.png").is_file()
        ]
        lines = [
            f"**{r['frames']} frames** at {rate_text(r)}, {r['size'][0]}x{r['size'][1]}, audio {r['audio']}; "
            f"{len(result.keyframes)} keyframes in {len(result.batches)} batches.",
            f"Saved in `{result.output_dir}` (video.mp4, keyframes/, run.json, and a copy of the input).",
        ]
        note = model_note(cfg.model)
        if note:
            lines.append(f"Note: {note}.")
        return RunOutput(str(result.video) if result.video else None, keyframes, r, "\n\n".join(lines))

    def propagate(
        self, video: str | None, keyframes: list[str], resolution, options: str = "", progress: bool = True
    ) -> RunOutput:
        """The user's stylized keyframes propagated to every frame of ``video`` (``propagate_video``); ``options``:
        the Options box's YAML, ``PropagationConfig`` fields by name."""
        from .propagate.run import keyframe_files, propagate_video
        from .run_files import write_json
        from .runner import package_versions

        if not video:
            raise InputError("no video: upload a video first")
        res = None if resolution in (None, KEYS_SIZE) else _whole("resolution", resolution)
        named = keyframe_files(keyframes)
        if not named:
            raise InputError(
                "no keyframes: upload your stylized frames named by frame index (0000.png, 0012.png, ...)"
                + (f"; got {', '.join(Path(k).name for k in keyframes[:5])}" if keyframes else "")
            )
        ignored = sorted({Path(k).name for k in keyframes} - {p.name for _, p in named})
        opts = parse_propagation_options(options)
        propagation_config(dict(opts), "options")  # a wrong option fails before a folder is made
        with self._lock, self._stoppable("propagate") as stop:
            folder = run_folder(self.output_root, "propagate")
            try:
                # From the uploads themselves, so that an error names the file the user gave; copies are kept after.
                t0 = time.perf_counter()
                _save(folder.mkdir, folder, parents=True)
                r = propagate_video(
                    video,
                    named,
                    folder / "video.mp4",
                    resolution=res,
                    progress=progress,
                    options=opts,
                    should_stop=stop.is_set,
                )
                upload = Path(video)
                _save(shutil.copyfile, folder, upload, folder / f"input{upload.suffix.lower()}")
                _save((folder / "keyframes").mkdir, folder)
                for idx, p in named:
                    _save(shutil.copyfile, folder, p, folder / "keyframes" / f"{idx:04d}{p.suffix.lower()}")
                report = {
                    "input": upload.name,
                    "keyframes": r.keyframes,
                    "ignored": ignored,
                    "options": opts,
                    "frames": r.frames,
                    "timing": r.rate,
                    "audio": r.audio,
                    "seconds": time.perf_counter() - t0,
                    "versions": package_versions(),
                }
                _save(write_json, folder, folder / "run.json", report)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)  # nothing worth keeping
                raise
        message = (
            f"**{r.frames} frames** at {r.rate}, audio {r.audio}; from {len(r.keyframes)} keyframes "
            f"({', '.join(map(str, r.keyframes))}).\n\nSaved in `{folder}` (video.mp4, keyframes/, run.json, and a "
            "copy of the input)."
        )
        if ignored:
            message += f"\n\nIgnored (not named by frame index): {', '.join(ignored)}."
        return RunOutput(str(r.video), [], {}, message)


def _save(write, folder: Path, *args, **kwargs):
    """``write(*args, **kwargs)``, with a failure to write into the run's folder said as such."""
    try:
        return write(*args, **kwargs)
    except OSError as e:
        raise InputError(f"{folder}: cannot save the run there ({e.strerror or e})") from None


# ------------------------------------------------------------------------------------------------ the page (gradio)


def _require_gradio():
    try:
        import gradio as gr
    except ImportError:
        raise InputError(
            "the web UI needs gradio, which is not installed: pip install 'fresco-v2v[ui]' (or use `fresco "
            "translate`, which needs nothing more)"
        ) from None
    return gr


MODEL_HELP = (
    "A hub id (e.g. stable-diffusion-v1-5/stable-diffusion-v1-5), a diffusers folder, a civitai-style .safetensors "
    "file, or 'toy' (the bundled 128x128 toy-world model) / 'tiny' (random weights, noise-like output, for testing)."
)


def _run_steps(gr, run, first_step: str, progress, shown, empty: tuple):
    """A click's steps, as gradio shows them: (status line, *outputs) once at the start, once at the end.

    The start clears the last result, so none stays next to a new run or its error. A user's mistake (FrescoError)
    ends in the status line and a toast without failing the event: gradio would draw its error badge over that very
    line; API callers get the same text. A Stop (Cancelled) ends there too, saying what was kept. Anything else is
    logged and fails the event, with the reason shown too.
    """
    yield ("Running…", *empty)
    progress(0, desc=first_step)
    try:
        out = run()
    except Cancelled as e:
        yield (f"**Stopped.** {e}", *empty)
        return
    except FrescoError as e:
        gr.Warning(str(e), duration=15)
        yield (f"**Error:** {e}", *empty)
        return
    except Exception as e:
        logger.exception("the run failed")
        yield (f"**Failed:** {type(e).__name__}: {e} (the server's log has the details)", *empty)
        raise gr.Error(f"{type(e).__name__}: {e}", duration=None) from None
    yield shown(out)


STOPPING = "Stopping at the next denoising step or frame…"
NOTHING_TO_STOP = "Nothing is running here."


def _stop_button(button, message, session: WebSession, kind: str, api_name: str) -> None:
    """Stop asks the tab's running run to end (``WebSession.stop``); its status line then says what was kept.

    Outside the queue's limit of one (``concurrency_limit=None``): a Stop must not wait behind the run it stops.
    """

    def on_stop():
        return STOPPING if session.stop(kind) else NOTHING_TO_STOP

    button.click(on_stop, None, [message], api_name=api_name, concurrency_limit=None)


def _translate_tab(gr, session: WebSession) -> None:
    """Video + prompt (+ options) -> translated video, keyframes and report (``translate_video``)."""
    with gr.Row():
        with gr.Column():
            video = gr.Video(label="Input video", sources=["upload"])
            prompt = gr.Textbox(label="Prompt", placeholder="a watercolor painting of a dog", lines=2)
            model = gr.Textbox(label="Base model", value=DEFAULT_MODEL, info=MODEL_HELP)
            with gr.Row():
                strength = gr.Slider(0.05, 1.0, value=_DEFAULTS.strength, step=0.05, label="Strength")
                steps = gr.Slider(1, 150, value=_DEFAULTS.steps, step=1, label="Denoising steps")
            with gr.Row():
                guidance = gr.Slider(0.0, 30.0, value=_DEFAULTS.guidance_scale, step=0.5, label="Guidance")
                seed = gr.Number(value=_DEFAULTS.seed, label="Seed")  # no precision: 1.5 is refused, not rounded
            with gr.Row():
                resolution = gr.Dropdown(list(RESOLUTIONS), value=_DEFAULTS.resolution, label="Short side (px)")
                max_frames = gr.Number(value=0, label="Max frames (0: all)")
            # Above the optional sections, with the status line (and progress) under it: what a click started is
            # in view where the click was.
            with gr.Row():
                run = gr.Button("Translate", variant="primary", scale=3)
                stop = gr.Button("Stop", variant="stop", scale=1)
            message = gr.Markdown("Upload a video, write a prompt and press *Translate*.")
            with gr.Accordion("Prompts per keyframe, negative and added prompt", open=False):
                keyframe_prompts = gr.Textbox(
                    label="Keyframe prompts",
                    lines=3,
                    placeholder="0: in spring\n2.5s: in winter",
                    info="From that frame (or time) on, this text is added to the prompt.",
                )
                negative = gr.Textbox(label="Negative prompt", value=DEFAULT_NEGATIVE_PROMPT, lines=2)
                added = gr.Textbox(label="Added to every prompt", value=DEFAULT_ADDED_PROMPT)
            with gr.Accordion("LoRAs, ControlNet and more options", open=False):
                loras = gr.Textbox(
                    label="LoRAs", lines=2, placeholder="style.safetensors:0.8", info="PATH[:SCALE], one per line"
                )
                controlnet = gr.Textbox(
                    label="ControlNet",
                    value="canny",
                    info="canny, depth, hed (TYPE:ID_OR_PATH for other weights) or none; several: comma-separated",
                )
                more = gr.Code(
                    label="More options (YAML, the names of a --config file)",
                    language="yaml",
                    value=(
                        "# e.g.\n# colorize: true\n# freeu: [1.2, 1.4, 0.9, 0.2]   # b1, b2, s1, s2\n"
                        "# flow: gmflow            # the paper's flow (checkpoint in ./models/)\n"
                        "# fresco:\n#   optimization:\n#     iterations: 10\n"
                        "# propagation_options:\n#   flow: dis-fine\n"
                    ),
                )
        with gr.Column():
            result = gr.Video(label="Result")
            gallery = gr.Gallery(label="Translated keyframes", columns=4, height="auto")
            with gr.Accordion("Run report (run.json)", open=False):
                report = gr.JSON(label="run.json")

    fields = {
        "video": video,
        "prompt": prompt,
        "model": model,
        "strength": strength,
        "steps": steps,
        "guidance_scale": guidance,
        "seed": seed,
        "resolution": resolution,
        "max_frames": max_frames,
        "keyframe_prompts": keyframe_prompts,
        "negative_prompt": negative,
        "added_prompt": added,
        "loras": loras,
        "controlnet": controlnet,
        "more_options": more,
    }

    def on_run(values: dict, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (gradio's idiom)
        # A component in a never-opened section arrives as None: it then means the form's default. Elsewhere
        # None is a cleared field, which form_config refuses by name.
        given = {name: values[c] for name, c in fields.items() if values[c] is not None or name not in FOLDED}
        yield from _run_steps(
            gr,
            lambda: session.translate(FormValues(**given)),
            "reading the video, loading the model",  # until the first stage's own bar shows
            progress,
            lambda out: (out.message, out.video, out.keyframes, out.report),
            empty=(None, None, None),
        )

    # A set of inputs: gradio passes one {component: value} dict, so names and components are paired once, above.
    # Runs queue (limit 1 below): a second click waits for the first.
    run.click(
        on_run, set(fields.values()), [message, result, gallery, report], api_name="translate",
        show_progress_on=[message],
    )  # fmt: skip
    _stop_button(stop, message, session, "translate", "stop")


def _propagate_tab(gr, session: WebSession) -> None:
    """Video + the user's own stylized keyframes -> every frame (``propagate_video``), Ebsynth's job."""
    gr.Markdown(
        "Stylized some frames yourself (in an image editor, or with another model)? Upload the video and those "
        "frames, named by frame index (`0000.png`, `0012.png`; the keyframes of a translation are named so). They "
        "must be the video's frames at the short side below. Every other frame is rendered from them."
    )
    with gr.Row():
        with gr.Column():
            video = gr.Video(label="Input video", sources=["upload"])
            keys = gr.File(label="Stylized keyframes", file_count="multiple", file_types=["image"])
            resolution = gr.Dropdown(
                [KEYS_SIZE, *RESOLUTIONS], value=KEYS_SIZE, label="Short side (px) the keyframes were made at"
            )
            options = gr.Code(
                label="Options (YAML, the names of PropagationConfig; see the README's Propagation section)",
                language="yaml",
                value=(
                    "# e.g.\n# colour_lookup: true    # for every key (default auto: flat-colour keys)\n"
                    "# flow: dis-fine        # slow, detailed motion\n"
                ),
            )
            with gr.Row():
                run = gr.Button("Propagate", variant="primary", scale=3)
                stop = gr.Button("Stop", variant="stop", scale=1)
            message = gr.Markdown("Upload a video and its stylized keyframes, then press *Propagate*.")
        with gr.Column():
            result = gr.Video(label="Result")

    def on_propagate(video_path, key_paths, short_side, options_text, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        yield from _run_steps(
            gr,
            lambda: session.propagate(video_path, key_paths or [], short_side, options_text or ""),
            "reading the video and the keyframes, estimating optical flow",
            progress,
            lambda out: (out.message, out.video),
            empty=(None,),
        )

    run.click(on_propagate, [video, keys, resolution, options], [message, result], api_name="propagate",
              show_progress_on=[message])  # fmt: skip
    _stop_button(stop, message, session, "propagate", "stop_propagation")


def build_app(session: WebSession | None = None):
    """The gradio Blocks page (not launched): inputs on the left, the result on the right."""
    gr = _require_gradio()
    session = session or WebSession()

    with gr.Blocks(title="fresco-v2v") as app:
        gr.Markdown(
            "# fresco-v2v\nRe-render a video from a text prompt (FRESCO, CVPR 2024). Keyframes are translated "
            "together with FRESCO-guided attention and feature optimization; the other frames are propagated "
            "from them; the result keeps the frame count, the exact frame rate and the audio."
        )
        with gr.Tabs():
            with gr.Tab("Translate"):
                _translate_tab(gr, session)
            with gr.Tab("Propagate your keyframes"):
                _propagate_tab(gr, session)
    app.queue(default_concurrency_limit=1)  # one GPU: runs wait their turn
    return app


def parse_auth(text: str) -> tuple[str, str]:
    """``USER:PASSWORD`` -> (user, password); both non-empty (the password may contain ':')."""
    user, sep, password = text.partition(":")
    if not (sep and user and password):
        raise ConfigError("auth", "USER:PASSWORD, both non-empty", "a value without them")  # never echo a password
    return user, password


def launch(
    host: str = "127.0.0.1",
    port: int = 7860,
    output_root: str | Path = "fresco-ui-runs",
    share: bool = False,
    auth: tuple[str, str] | None = None,
) -> None:
    """Build and serve the page (blocks until stopped). Runs are saved under ``output_root``; ``auth``: the login
    gradio asks for before showing the page."""
    root = Path(output_root).resolve()
    app = build_app(WebSession(root))
    logger.info("runs are saved under %s", root)
    # gradio serves files only from its cache, the working folder and allowed_paths: the results live in root
    app.launch(server_name=host, server_port=port, share=share, allowed_paths=[str(root)], auth=auth)
