"""The page of `fresco ui` (gradio): its two tabs over :class:`fresco_v2v.webui.WebSession`, and the server.

Imported only when the page is built (gradio is an optional dependency: ``pip install 'fresco-v2v[ui]'``).
Served beyond this machine, the server runs :class:`fresco_v2v.webui_access.VisitorFiles` before gradio, and the
session keeps visitors apart (``WebSession.public``).
"""

from __future__ import annotations

import logging
import secrets
import shutil
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder
from starlette.middleware import Middleware

from .config import DEFAULT_ADDED_PROMPT, DEFAULT_IP_ADAPTER_SCALE, DEFAULT_MODEL, DEFAULT_NEGATIVE_PROMPT
from .errors import Cancelled, ConfigError, FrescoError
from .webui import _DEFAULTS, FOLDED, KEYS_SIZE, RESOLUTIONS, FormValues, WebSession
from .webui_access import VisitorFiles

logger = logging.getLogger(__name__)

#: The folder, in gradio's upload folder, of the files the page shows (``webui_access.show_files``), + "-PORT".
SHOWN_FOLDER = "fresco-visitors"


MODEL_HELP = (
    "A hub id (e.g. stable-diffusion-v1-5/stable-diffusion-v1-5, stabilityai/stable-diffusion-xl-base-1.0), a "
    "diffusers folder, a civitai-style SD1.x or SDXL .safetensors file, or 'toy' (the bundled 128x128 toy-world "
    "model) / 'tiny', 'tiny-xl' (random weights, noise-like output, for testing). SDXL in float16: put "
    "vae: madebyollin/sdxl-vae-fp16-fix in More options."
)


IP_ADAPTER_HELP = (
    "ID|PATH[:SCALE]: h94/IP-Adapter (its SD1.5 adapter; a file in a hub repo), a .safetensors file or folder, or "
    f"'tiny' (random, for testing). The style image below guides every keyframe; scale default "
    f"{DEFAULT_IP_ADAPTER_SCALE}."
)


def _run_steps(session: WebSession, visitor: str | None, run, first_step: str, progress, shown, empty: tuple):
    """A click's steps, as gradio shows them: (status line, *outputs) once at the start, once at the end.

    The start clears the last result, so none stays next to a new run or its error. A user's mistake (FrescoError)
    ends in the status line and a toast without failing the event: gradio would draw its error badge over that very
    line; API callers get the same text. A Stop (Cancelled) ends there too, saying what was kept. Anything else is
    logged and fails the event: with its reason on this machine; on a public page with only a reference to the
    server's log (an exception's text can hold paths and more of the server).
    """
    yield ("Running…", *empty)
    progress(0, desc=first_step)
    try:
        out = run()
    except Cancelled as e:
        yield (f"**Stopped.** {session.error_text(e, visitor)}", *empty)
        return
    except FrescoError as e:
        text = session.error_text(e, visitor)
        gr.Warning(text, duration=15)
        yield (f"**Error:** {text}", *empty)
        return
    except Exception as e:
        reference = secrets.token_hex(4)
        logger.exception("the run failed (reference %s)", reference)
        reason = f"an internal error (reference {reference})" if session.public else f"{type(e).__name__}: {e}"
        yield (f"**Failed:** {reason} (the server's log has the details)", *empty)
        raise gr.Error(reason, duration=None) from None
    yield shown(out)


STOPPING = "Stopping at the next denoising step or frame…"
NOTHING_TO_STOP = "Nothing is running here."


def _stop_button(button, message, session: WebSession, kind: str, api_name: str) -> None:
    """Stop asks the tab's running run to end (``WebSession.stop``); its status line then says what was kept.

    Outside the queue's limit of one (``concurrency_limit=None``): a Stop must not wait behind the run it stops.
    """

    def on_stop(request: gr.Request = None):
        return STOPPING if session.stop(kind, _visitor(session, request)) else NOTHING_TO_STOP

    button.click(on_stop, None, [message], api_name=api_name, concurrency_limit=None)


def _translate_tab(session: WebSession) -> None:
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
                        "# ip_adapter_image_encoder: h94/IP-Adapter/models/image_encoder\n"
                        "# style_images: {0: a.png, 4.5s: b.png}   # per keyframe, with the IP-Adapter above\n"
                    ),
                )
            with gr.Accordion("Style image (IP-Adapter)", open=False):
                ip_adapter = gr.Textbox(label="IP-Adapter", placeholder="h94/IP-Adapter:0.5", info=IP_ADAPTER_HELP)
                style_image = gr.Image(
                    label="Style image", type="filepath", image_mode=None, sources=["upload"], height=200
                )  # image_mode None: the uploaded file as it is, not re-encoded
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
        "ip_adapter": ip_adapter,
        "style_image": style_image,
    }

    def on_run(values: dict, request: gr.Request = None, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        # A component in a never-opened section arrives as None: it then means the form's default. Elsewhere
        # None is a cleared field, which form_config refuses by name.
        given = {name: values[c] for name, c in fields.items() if values[c] is not None or name not in FOLDED}
        visitor = _visitor(session, request)
        yield from _run_steps(
            session,
            visitor,
            lambda: session.translate(FormValues(**given), visitor=visitor),
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


def _propagate_tab(session: WebSession) -> None:
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

    def on_propagate(
        video_path, key_paths, short_side, options_text, request: gr.Request = None,
        progress=gr.Progress(track_tqdm=True),  # noqa: B008 (gradio's idiom)
    ):  # fmt: skip
        visitor = _visitor(session, request)
        yield from _run_steps(
            session,
            visitor,
            lambda: session.propagate(video_path, key_paths or [], short_side, options_text or "", visitor=visitor),
            "reading the video and the keyframes, estimating optical flow",
            progress,
            lambda out: (out.message, out.video),
            empty=(None,),
        )

    run.click(on_propagate, [video, keys, resolution, options], [message, result], api_name="propagate",
              show_progress_on=[message])  # fmt: skip
    _stop_button(stop, message, session, "propagate", "stop_propagation")


def _visitor(session: WebSession, request: gr.Request | None) -> str | None:
    """The visitor of an event (None outside a served page)."""
    return None if request is None else session.visitor(dict(request.cookies))


def build_app(session: WebSession | None = None):
    """The gradio Blocks page (not launched): inputs on the left, the result on the right."""
    session = session or WebSession()

    with gr.Blocks(title="fresco-v2v") as app:
        gr.Markdown(
            "# fresco-v2v\nRe-render a video from a text prompt (FRESCO, CVPR 2024). Keyframes are translated "
            "together with FRESCO-guided attention and feature optimization; the other frames are propagated "
            "from them; the result keeps the frame count, the exact frame rate and the audio."
        )
        with gr.Tabs():
            with gr.Tab("Translate"):
                _translate_tab(session)
            with gr.Tab("Propagate your keyframes"):
                _propagate_tab(session)
    app.queue(default_concurrency_limit=1)  # one GPU: runs wait their turn
    return app


def launch(
    host: str = "127.0.0.1",
    port: int = 7860,
    output_root: str | Path = "fresco-ui-runs",
    share: bool = False,
    auth: tuple[str, str] | None = None,
    public: bool = False,
    models_root: str | Path | None = None,
    max_upload_mb: int = 2000,
    prevent_thread_lock: bool = False,
):
    """Build and serve the page (blocks until stopped, unless ``prevent_thread_lock``: then the served app is
    returned, for tests and scripts). Runs are saved under ``output_root``; ``auth``: the login
    gradio asks for before showing the page; ``public``: served beyond this machine (``WebSession.public``), model
    fields confined to ``models_root``; uploads up to ``max_upload_mb`` MB."""
    root = Path(output_root).resolve()
    uploads = Path(get_upload_folder()).resolve()
    if root in (uploads, *uploads.parents) or uploads in root.parents:
        # the output root is never served, gradio's upload folder must be
        raise ConfigError("output_root", f"a folder apart from gradio's upload folder ({uploads})", str(root))
    shown = uploads / f"{SHOWN_FOLDER}-{port}"
    # The visitor ids of an earlier server on this port (another key) name no one now: their shown files go.
    shutil.rmtree(shown, ignore_errors=True)
    models = Path(models_root).resolve() if models_root is not None else None
    session = WebSession(root, public=public, models_root=models, shown_root=shown)
    app = build_app(session)
    logger.info("runs are saved under %s", root)
    # Nothing under the output root is served (blocked_paths, and VisitorFiles before gradio): the page shows a
    # run's files through their links under `shown`, each visitor their own.
    guard = Middleware(VisitorFiles, key=session.key, shown_root=shown, private_roots=(root,))
    app.launch(
        server_name=host, server_port=port, share=share, auth=auth, blocked_paths=[str(root)],
        max_file_size=f"{max_upload_mb}mb", app_kwargs={"middleware": [guard]},
        prevent_thread_lock=prevent_thread_lock, quiet=prevent_thread_lock,
    )  # fmt: skip
    return app
