"""`fresco ui`: a browser page over :func:`fresco_v2v.runner.translate_video` and
:func:`fresco_v2v.propagate.run.propagate_video`.

A thin layer, like the CLI: the form's values become the same :class:`~fresco_v2v.config.RunConfig` that
`fresco translate` builds (same names, same validation, same errors), and every run writes the same output folder
(video with the input's rate and audio, keyframes, run.json), a new one per run under ``output_root``, so nothing
is overwritten. Options that are not on the form go in the "More options" box as YAML, with the names of a
`--config` file.

Gradio is an optional dependency (``pip install 'fresco-v2v[ui]'``): the page itself (``build_app``, ``launch``)
is :mod:`fresco_v2v.webui_page`, which imports it; the form logic here is usable and testable without it.
"""

from __future__ import annotations

import logging
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .config import (
    RunConfig,
    names_expected,
    propagation_config,
    to_dict,
)
from .errors import ConfigError, InputError
from .webui_access import (
    confine_paths,
    confine_propagation_options,
    cookie_of,
    public_data,
    public_text,
    show_files,
    visitor_id,
)

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
    "ip_adapter",
    "style_image",
)
#: The form fields in its folded sections (sent as None until a section is opened).
FOLDED = (
    "keyframe_prompts",
    "negative_prompt",
    "added_prompt",
    "loras",
    "controlnet",
    "more_options",
    "ip_adapter",
    "style_image",
)
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
    ip_adapter: str = ""  # "ID|PATH[:SCALE]"; "": none
    style_image: str | None = None  # the uploaded style image's path


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
    texts = (
        "prompt",
        "model",
        "negative_prompt",
        "added_prompt",
        "loras",
        "controlnet",
        "keyframe_prompts",
        "ip_adapter",
    )
    for name in texts:
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
        ip_adapter=form.ip_adapter.strip() or None,
        style_image=str(form.style_image) if form.style_image else None,
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

    ``public`` (a page served beyond this machine, ``fresco_v2v.webui_access``): each visitor's runs go to
    ``OUTPUT_ROOT/VISITOR_ID/``, the model fields take hub ids and paths under ``models_root`` only, the page's
    texts carry no server paths, and a visitor's Stop reaches only their own run.
    """

    output_root: Path = Path("fresco-ui-runs")
    public: bool = False
    models_root: Path | None = None
    #: Where the files the page shows are linked, a folder per visitor (``webui_access.show_files``); None: the
    #: run's own paths (a session used without the served page).
    shown_root: Path | None = None
    #: The key of the visitor ids (``webui_access.visitor_id``), new for each server.
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _pipeline: object = None
    _signature: tuple | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop_lock: threading.Lock = field(default_factory=threading.Lock)
    # (kind, visitor, its stop request) of the run holding _lock
    _running: tuple[str, str | None, threading.Event] | None = None

    def visitor(self, cookies: dict) -> str | None:
        """The visitor id of a request's cookies (None without the visitor cookie)."""
        cookie = cookie_of(cookies)
        return None if cookie is None else visitor_id(self.key, cookie)

    def stop(self, kind: str | None = None, visitor: str | None = None) -> bool:
        """Ask the running run ("translate" or "propagate"; None: either) to stop; False when there is none (or,
        on a public page, when it is another visitor's)."""
        with self._stop_lock:
            if self._running is None or kind not in (None, self._running[0]):
                return False
            if self.public and visitor != self._running[1]:
                return False
            self._running[2].set()
            return True

    @contextmanager
    def _stoppable(self, kind: str, visitor: str | None = None) -> Iterator[threading.Event]:
        """A run's stop request, visible to :meth:`stop` while the run lasts."""
        request = threading.Event()
        with self._stop_lock:
            self._running = (kind, visitor, request)
        try:
            yield request
        finally:
            with self._stop_lock:
                self._running = None

    def runs_root(self, visitor: str | None) -> Path:
        """The folder of a visitor's runs: the output root, or on a public page the visitor's own folder in it."""
        if not self.public:
            return self.output_root
        if visitor is None:
            raise InputError(
                "this page keeps each visitor's runs apart with a cookie, and your browser sent none: allow cookies "
                "for this site and reload the page"
            )
        return self.output_root / visitor

    def page_text(self, text: str, visitor: str | None = None) -> str:
        """A message as the page may show it: as it is on this machine; on a public page without server paths
        (those under the visitor's folder or the models root keep their part below it)."""
        if not self.public:
            return text
        roots = [r for r in (self.models_root, self.output_root / visitor if visitor else None) if r is not None]
        return public_text(text, tuple(roots))

    def error_text(self, error: Exception, visitor: str | None = None) -> str:
        """A FrescoError as the page may show it (:meth:`page_text`); a ConfigError's value is the visitor's own (from
        the form or its YAML) and is shown as given."""
        if self.public and isinstance(error, ConfigError):
            return f"{error.field}: expected {self.page_text(error.expected, visitor)}, got {error.given!r}"
        return self.page_text(str(error), visitor)

    def _shown(self, files: list[Path], visitor: str | None, run: str) -> list[str]:
        if self.shown_root is None or visitor is None:
            return [str(f) for f in files]
        return [str(f) for f in show_files(files, self.shown_root, visitor, run)]

    def _saved_line(self, folder: Path) -> str:
        where = f"on the server as run `{folder.name}`" if self.public else f"in `{folder}`"
        return f"Saved {where} (video.mp4, keyframes/, run.json, and a copy of the input)."

    def pipeline(self, cfg: RunConfig):
        """The loaded pipeline for ``cfg``: the cached one while its signature holds, else a fresh load."""
        from . import runner

        sig = runner.pipeline_signature(cfg)
        if self._signature != sig:
            self._pipeline = self._signature = None  # free the old one before loading the next
            logger.info("loading the pipeline for %s", cfg.model)
            self._pipeline, self._signature = runner.load_run_pipeline(cfg), sig
        return self._pipeline

    def translate(self, form: FormValues, progress: bool = True, visitor: str | None = None) -> RunOutput:
        from .models import model_note
        from .run_folder import STATE_DIR
        from .runner import rate_text, translate_video

        with self._lock, self._stoppable("translate", visitor) as stop:
            folder = run_folder(self.runs_root(visitor), form.prompt)
            cfg = form_config(form, folder)
            if cfg.allow_pickle:
                raise ConfigError(
                    "allow_pickle",
                    "false on the page (a pickle checkpoint runs code on the server when loaded; convert it to "
                    ".safetensors, or run it with `fresco translate --allow-pickle`)",
                    cfg.allow_pickle,
                )
            if self.public:
                cfg = confine_paths(cfg, self.models_root)
            upload = Path(cfg.input)
            try:
                if upload.is_file():  # the upload lives in gradio's temporary cache: keep a copy with the run
                    kept = folder / f"input{upload.suffix.lower()}"
                    _save(folder.mkdir, folder, parents=True)
                    _save(shutil.copyfile, folder, upload, kept)
                    cfg = RunConfig.from_dict(cfg.to_dict() | {"input": str(kept)}).validate()
                cfg = _keep_style_image(cfg, folder)
                # The model is loaded by translate_video once the video has been read: bad input fails first.
                result = translate_video(cfg, progress=progress, load_pipeline=self.pipeline, should_stop=stop.is_set)
            except BaseException:
                if folder.is_dir() and not any((folder / STATE_DIR).glob("batch_*.pt")):
                    shutil.rmtree(folder, ignore_errors=True)  # nothing worth keeping: only the input's copy
                raise
        r = result.report
        pngs = [result.output_dir / "keyframes" / f"{k:04d}.png" for k in result.keyframes]
        pngs = [p for p in pngs if p.is_file()]
        video = [result.video] if result.video else []
        shown = self._shown([*video, *pngs], visitor, folder.name)
        keyframes = [(path, f"frame {int(Path(path).stem)}") for path in shown[len(video) :]]
        lines = [
            f"**{r['frames']} frames** at {rate_text(r)}, {r['size'][0]}x{r['size'][1]}, audio {r['audio']}; "
            f"{len(result.keyframes)} keyframes in {len(result.batches)} batches.",
            self._saved_line(result.output_dir),
        ]
        note = model_note(cfg.model)
        if note:
            lines.append(f"Note: {note}.")
        report = public_data(r, (self.output_root / visitor,) if visitor else ()) if self.public else r
        message = self.page_text("\n\n".join(lines), visitor)
        return RunOutput(shown[0] if video else None, keyframes, report, message)

    def propagate(
        self,
        video: str | None,
        keyframes: list[str],
        resolution,
        options: str = "",
        progress: bool = True,
        visitor: str | None = None,
    ) -> RunOutput:
        """The user's stylized keyframes propagated to every frame of ``video`` (``propagate_video``); ``options``:
        the Options box's YAML, ``PropagationConfig`` fields by name."""
        from .propagate.run import keyframe_files

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
        # a wrong option (or, on a public page, a flow checkpoint outside the models root) fails before a folder
        if self.public:
            opts = confine_propagation_options(opts, self.models_root, "options")
        else:
            propagation_config(dict(opts), "options")
        with self._lock, self._stoppable("propagate", visitor) as stop:
            folder = run_folder(self.runs_root(visitor), "propagate")
            r = self._propagate_into(folder, video, named, res, opts, ignored, progress, stop)
        message = (
            f"**{r.frames} frames** at {r.rate}, audio {r.audio}; from {len(r.keyframes)} keyframes "
            f"({', '.join(map(str, r.keyframes))}).\n\n{self._saved_line(folder)}"
        )
        if ignored:
            message += f"\n\nIgnored (not named by frame index): {', '.join(ignored)}."
        (shown,) = self._shown([Path(r.video)], visitor, folder.name)
        return RunOutput(shown, [], {}, self.page_text(message, visitor))

    def _propagate_into(self, folder, video, named, res, opts, ignored, progress, stop):
        from .propagate.run import propagate_video
        from .run_files import write_json
        from .runner import package_versions

        try:
            # From the uploads themselves, so that an error names the file the user gave; copies are kept after.
            t0 = time.perf_counter()
            _save(folder.mkdir, folder, parents=True)
            r = propagate_video(
                video, named, folder / "video.mp4", resolution=res, progress=progress, options=opts,
                should_stop=stop.is_set,
            )  # fmt: skip
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
        return r


def _keep_style_image(cfg: RunConfig, folder: Path) -> RunConfig:
    """The uploaded style image copied into the run's folder (``style.EXT``), as the input is: the run and its
    ``--config`` resume do not depend on gradio's temporary cache."""
    upload = Path(cfg.style_image) if cfg.style_image else None
    if upload is None or not upload.is_file():
        return cfg  # a missing file is reported by the run, naming it
    kept = folder / f"style{upload.suffix.lower() or '.png'}"
    _save(folder.mkdir, folder, parents=True, exist_ok=True)
    _save(shutil.copyfile, folder, upload, kept)
    return RunConfig.from_dict(cfg.to_dict() | {"style_image": str(kept)}).validate()


def _save(write, folder: Path, *args, **kwargs):
    """``write(*args, **kwargs)``, with a failure to write into the run's folder said as such."""
    try:
        return write(*args, **kwargs)
    except OSError as e:
        raise InputError(f"{folder}: cannot save the run there ({e.strerror or e})") from None


# ------------------------------------------------------------------------------------------------ the page (gradio)


def require_gradio():
    try:
        import gradio as gr
    except ImportError:
        raise InputError(
            "the web UI needs gradio, which is not installed: pip install 'fresco-v2v[ui]' (or use `fresco "
            "translate`, which needs nothing more)"
        ) from None
    return gr


def parse_auth(text: str) -> tuple[str, str]:
    """``USER:PASSWORD`` -> (user, password); both non-empty (the password may contain ':')."""
    user, sep, password = text.partition(":")
    if not (sep and user and password):
        raise ConfigError("auth", "USER:PASSWORD, both non-empty", "a value without them")  # never echo a password
    return user, password
