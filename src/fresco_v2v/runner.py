"""`translate_video(RunConfig)`: the one typed entry point behind `fresco translate`, the demo and the web UI.

Stages: read → keyframes (Alg. 1) and batches (§3.5) → batched FRESCO translation with anchors → propagation →
encoding with the input's exact rate and audio. Output folder::

    OUTDIR/video.mp4            every frame, same count and rate as the input, original audio
    OUTDIR/keyframes/NNNN.png   translated keyframes, named by frame index
    OUTDIR/run.json             resolved config, keyframes, batches, timings, versions, seed
    OUTDIR/.fresco/             resume state: the config (run-config.json, usable as --config) and, per finished
                                batch, its anchor latents

Resuming: rerun with the same OUTDIR and config; finished batches are read back, not redone. A Stop
(``should_stop``) or Ctrl-C keeps every finished batch the same way. Every file is
written to a temporary name and renamed, so a killed run never leaves a truncated file in place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from .annotators import condition_images, load_condition_annotators
from .assembly import (  # noqa: F401 (re-exported: the CLI, web UI and cluster import them from here)
    RunResult,
    assemble,
    finish_run,
    package_versions,
    propagate_frames,
    rate_text,
)
from .config import RunConfig, prompt_for_frame
from .correspondence import build_correspondence
from .errors import Cancelled, InputError, OutOfMemory
from .flow import (
    BidirectionalFlow,
    KeyframeFlowStats,
    batch_keyframe_flows,
    chain_of,
    get_flow_estimator,
)
from .keyframes import plan_batches, scan_distances, select_keyframes
from .models import builtin_model, default_controlnet, find_stack, model_family
from .pipeline import AnchorLatents
from .run_files import (
    DamagedState,
    KeyImages,
    keyframe_path,
    load_anchors,
    load_chain,
    read_png,
    save_anchors,
    save_chain,
    write_json,
    write_png,
)
from .run_folder import (
    RUN_CONFIG,
    check_disk_space,
    disk_needed,
    finished_hint,
    prepare_output,
    stopped_message,
)
from .run_plan import RunPlan
from .video import FrameReader

logger = logging.getLogger(__name__)


class _KeyframeFlows:
    """The keyframe flows of each batch (§3.2 through the frames in between, §3.5 anchors), estimated once a run."""

    def __init__(self, estimator, frames, batches: list[list[int]], state: Path):
        """``frames``: indexable by frame index and slice (a :class:`FrameReader`, or an array)."""
        self.estimator = estimator
        self.frames, self.batches, self.state = frames, batches, state
        self.stats = KeyframeFlowStats()
        self._chain: tuple[int, BidirectionalFlow] | None = None  # (batch, chain_of(its flows)), the latest only

    def chain(self, b: int) -> BidirectionalFlow | None:
        """chain_of(batch b's flows): kept from this run or read back from the state folder; else rebuilt batch by
        batch from the last chain there is (a folder of an older version, or a run killed between the chain and the
        batch file), without recursion."""
        if b < 0:
            return None
        if self._chain is None or self._chain[0] > b:
            saved = load_chain(self.state)
            self._chain = saved if saved is not None and saved[0] <= b else None
        start, chain = self._chain if self._chain is not None else (-1, None)
        for k in range(start + 1, b + 1):
            chain = chain_of(self._flows(k, chain))
        self._chain = (b, chain)
        return chain

    def _flows(self, b: int, previous: BidirectionalFlow | None) -> BidirectionalFlow:
        return batch_keyframe_flows(self.frames, self.batches[b], previous, self.estimator, stats=self.stats)

    def __call__(self, b: int) -> BidirectionalFlow:
        flows = self._flows(b, self.chain(b - 1))
        self._chain = (b, chain_of(flows))
        return flows

    def report(self) -> dict:
        seconds = self.stats.seconds_consecutive + self.stats.seconds_gaps
        return {"backend": self.estimator.name, "seconds": round(seconds, 3), **self.stats.to_dict()}


# -- the run -------------------------------------------------------------------------------------------------------


def _controlnet_ids(cfg: RunConfig) -> list[str]:
    if builtin_model(cfg.model):
        return [cfg.model] * len(cfg.controlnet_types)  # the built-in stacks bring their own ControlNets
    if all(":" in c for c in cfg.controlnet_types):
        return [c.split(":", 1)[1] for c in cfg.controlnet_types]
    family = model_family(cfg.model, cfg.allow_pickle)  # SD1.5's or SDXL's default weights per type
    return [c.split(":", 1)[1] if ":" in c else default_controlnet(c, family) for c in cfg.controlnet_types]


def _file_identity(ident: str) -> tuple | None:
    """(size, mtime) of a local file, so that a checkpoint or LoRA rewritten at the same path is loaded again."""
    p = Path(ident.rsplit(":", 1)[0]) if not Path(ident).exists() else Path(ident)  # "PATH:SCALE" for LoRAs
    if p.is_file():
        st = p.stat()
        return (st.st_size, st.st_mtime_ns)
    return None


def pipeline_signature(cfg: RunConfig) -> tuple:
    """What the loaded pipeline of ``cfg`` depends on: two runs with equal signatures can share one pipeline.

    Local files count with their size and modification time. The seed counts only for the seeded stacks ("tiny",
    "tiny-xl"), whose random weights it draws; for every other model it only seeds the sampling, which
    ``translate_video`` does per run.
    """
    stack = find_stack(cfg.model)
    return (
        cfg.model,
        _file_identity(cfg.model),
        tuple((c, _file_identity(c)) for c in _controlnet_ids(cfg)),
        tuple((lora, _file_identity(lora)) for lora in cfg.lora),
        cfg.device,
        cfg.dtype,
        cfg.freeu,
        cfg.allow_pickle,
        cfg.seed if stack is not None and stack.seeded else None,
        (cfg.vae, _file_identity(cfg.vae)) if cfg.vae else None,
        # the IP-Adapter without its scale, which each call sets
        (cfg.ip_adapter_source, _file_identity(cfg.ip_adapter_source), cfg.ip_adapter_image_encoder)
        if cfg.ip_adapter
        else None,
    )


def load_run_pipeline(cfg: RunConfig):
    """The FrescoPipeline that ``translate_video(cfg)`` loads (base model, ControlNets, LoRAs, device, dtype)."""
    from .models import LoraSpec, load_pipeline

    return load_pipeline(
        cfg.model,
        _controlnet_ids(cfg),
        loras=[LoraSpec.parse(s) for s in cfg.lora],
        device=cfg.device,
        dtype=cfg.dtype,
        freeu=cfg.freeu,
        allow_pickle=cfg.allow_pickle,
        seed=cfg.seed,
        vae=cfg.vae,
        ip_adapter=cfg.ip_adapter_source,
        ip_adapter_image_encoder=cfg.ip_adapter_image_encoder,
    )


def _foreground_masks(cfg: RunConfig, batch: list[int], size: tuple[int, int]) -> np.ndarray:
    """[N, H, W] uint8 foreground masks of the batch's frames from ``cfg.foreground_masks`` (NNNN.png, white = fg)."""
    folder = Path(cfg.foreground_masks)
    out = []
    for k in batch:
        p = folder / f"{k:04d}.png"
        m = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise InputError(f"{p}: missing or unreadable foreground mask for keyframe {k}")
        out.append(cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_NEAREST))
    return np.stack(out)


@dataclass
class _BatchModels:
    """What the batches load on first need (only when a batch is not already finished): pipeline, annotators, the
    style images' embeddings (IP-Adapter: each image encoded once a run)."""

    cfg: RunConfig
    pipe: object | None = None
    load: Callable | None = None
    annotators: dict | None = None
    styles: object | None = None  # ip_adapter.StyleEmbeddings

    def get(self):
        if self.pipe is None:
            self.pipe = (self.load or load_run_pipeline)(self.cfg)
        if self.annotators is None:  # loaded once per run: depth and hed need weights
            self.annotators = load_condition_annotators(
                self.cfg.controlnet_types,
                depth_estimator=self.cfg.depth_estimator,
                hed_annotator=self.cfg.hed_annotator,
                allow_pickle=self.cfg.allow_pickle,
                device=self.pipe.device,
            )
        return self.pipe, self.annotators

    def style_embeds(self, plan: RunPlan, batch: list[int]):
        """[N, D] style image embeddings of the batch's keyframes, or None without an IP-Adapter."""
        if self.cfg.ip_adapter is None:
            return None
        if self.styles is None:
            from .ip_adapter import StyleEmbeddings

            self.styles = StyleEmbeddings(self.get()[0].ip_adapter, self.cfg)
        return self.styles.for_frames(batch, float(plan.info.fps), plan.frame_seconds)


def read_and_plan(cfg: RunConfig, overwrite: bool = False, progress: bool = True) -> RunPlan:
    """Stages 1-2: one decoding pass keeping only Alg. 1's distances (exact rate, timestamps, audio; bad input fails
    before OUTDIR is touched), the keyframes (Alg. 1) and batches (§3.5), and the output folder."""
    t0 = time.perf_counter()
    if cfg.ip_adapter is not None:  # a missing style image fails now, before the video is read
        from .ip_adapter import check_style_files

        check_style_files(cfg)
    info, distances = scan_distances(cfg.input, short_side=cfg.resolution, max_frames=cfg.max_frames, progress=progress)
    t1 = time.perf_counter()
    keys = select_keyframes(distances, cfg.s_min, cfg.s_max)
    batches = plan_batches(keys, cfg.batch_size)
    if cfg.background_smoothing > 0:  # a missing mask must fail now, not after hours of earlier batches
        missing = [k for k in keys if not (Path(cfg.foreground_masks) / f"{k:04d}.png").is_file()]
        if missing:
            raise InputError(
                f"{cfg.foreground_masks}: no foreground mask for keyframes {missing[:10]} "
                f"(expected files like {missing[0]:04d}.png)"
            )
    out = Path(cfg.output)
    state, lock = prepare_output(out, cfg, overwrite)
    try:
        check_disk_space(out, disk_needed(info, len(keys), len(batches), cfg.steps))
        write_json(state / RUN_CONFIG, {"config": cfg.to_dict()})
    except BaseException:
        lock.release()
        raise
    # a time in keyframe_prompts ("2.5s") names the frame shown then: a variable-rate clip says when that is
    frame_seconds = [info.times.seconds(i) for i in range(info.num_frames)] if info.times is not None else None
    logger.info("%d frames, %d keyframes in %d batches", info.num_frames, len(keys), len(batches))
    plan = RunPlan(cfg, info, keys, batches, out, state, frame_seconds, lock)
    plan.seconds["read"] = t1 - t0  # the decoding pass, with Alg. 1's distances
    plan.seconds["keyframes"] = time.perf_counter() - t1
    return plan


def _read_finished_batch(plan: RunPlan, b: int) -> AnchorLatents | None:
    """The anchors of batch ``b`` if it finished in an earlier run (its keyframes are on disk)."""
    done = plan.state / f"batch_{b:04d}.pt"
    if not (done.is_file() and all(keyframe_path(plan.out, k).is_file() for k in plan.batches[b])):
        return None
    try:
        anchors = load_anchors(done)
        for k in plan.batches[b]:
            read_png(keyframe_path(plan.out, k))
    except (DamagedState, InputError) as e:  # an empty or cut-off file (a disk that filled up, a copy that broke)
        logger.warning("%s; batch %d is done again (the other finished batches are kept)", e, b)
        done.unlink(missing_ok=True)
        return None
    logger.info("batch %d already done; resumed from %s", b, done)
    return anchors


def _translate_batch(plan: RunPlan, b: int, frames: np.ndarray, models: _BatchModels, flows, anchors, progress, stop):
    """One keyframe batch through the pipeline (§3.5: anchors of the earlier batches); out of memory says what to
    lower."""
    cfg, batch = plan.cfg, plan.batches[b]
    pipe, annotators = models.get()
    fps = float(plan.info.fps)
    prompts = [
        prompt_for_frame(cfg.prompt, cfg.added_prompt, cfg.keyframe_prompts, k, fps, plan.frame_seconds) for k in batch
    ]
    types = cfg.controlnet_types
    scales = list(cfg.controlnet_scale) * (len(types) if len(cfg.controlnet_scale) == 1 else 1) if types else []
    controls = condition_images(types, frames, annotators, cfg.canny_low, cfg.canny_high)
    masks = _foreground_masks(cfg, batch, frames.shape[1:3]) if cfg.background_smoothing > 0 else None
    try:
        corr = None
        if flows is not None:
            attention_rule, loss_rule = cfg.fresco.token_occlusion
            corr = build_correspondence(
                frames,
                flows,
                factors=pipe.decoder_factors,
                attention_occlusion=attention_rule,
                loss_occlusion=loss_rule,
            )
        return pipe(
            frames,
            prompts,
            negative_prompt=cfg.negative_prompt,
            num_inference_steps=cfg.steps,
            strength=cfg.strength,
            guidance_scale=cfg.guidance_scale,
            controlnet_conditioning_scale=scales,
            generator=torch.Generator().manual_seed(cfg.seed),
            fresco=cfg.fresco,
            correspondence=corr,
            control_images=controls,
            anchors=anchors if b > 0 else None,
            foreground_masks=masks,
            background_smoothing=cfg.background_smoothing,
            shared_step_noise=cfg.shared_step_noise,
            clip_skip=cfg.clip_skip,
            style_embeds=models.style_embeds(plan, batch),
            ip_adapter_scale=cfg.ip_adapter_scale,
            show_progress=progress,
            should_stop=stop,
        )
    except Cancelled as e:
        raise stopped_message(e, plan.out, b, len(plan.batches)) from None
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not isinstance(e, torch.OutOfMemoryError) and "out of memory" not in str(e):
            raise  # MPS reports running out of memory as a RuntimeError
        h, w = frames.shape[1:3]
        raise OutOfMemory(
            f"out of memory translating batch {b} ({len(batch)} frames of {w}x{h}) on {pipe.device}: "
            f"{str(e).splitlines()[0]}. Lower --batch-size (now {cfg.batch_size}; the paper uses 6-8) or "
            f"--resolution (now {cfg.resolution}), or use --dtype float16 on a GPU; a changed setting "
            "starts over (another -o, or --overwrite: the finished batches were made with the old one)."
            f"{finished_hint(plan.state, plan.out, len(plan.batches))}"
        ) from None


def translate_batch(
    plan: RunPlan,
    b: int,
    reader: FrameReader,
    flows: _KeyframeFlows,
    models: _BatchModels,
    anchors: AnchorLatents | None,
    progress=True,
    should_stop=None,
) -> AnchorLatents:
    """Stage 3 for batch ``b`` (its anchors: batch b-1's, §3.5): its new keyframes to OUTDIR/keyframes/, then its
    anchors to the state folder, which marks it finished. Returns them (what batch b+1 needs)."""
    batch = plan.batches[b]
    batch_flows = flows(b) if len(batch) > 1 else None
    result = _translate_batch(plan, b, reader.take(batch), models, batch_flows, anchors, progress, should_stop)
    new = batch if b == 0 else batch[2:]  # the two anchors were translated by earlier batches
    for k, img in zip(batch, result.frames):
        if k in new:
            write_png(keyframe_path(plan.out, k), img)
    save_anchors(plan.state / f"batch_{b:04d}.pt", result.anchors)  # marks the batch finished
    if batch_flows is not None:  # after: a kill in between costs the next batch one batch's flows, not all
        save_chain(plan.state, b, flows.chain(b))
    return result.anchors


def translate_batches(
    plan: RunPlan, reader: FrameReader, flows: _KeyframeFlows, models: _BatchModels, progress=True, should_stop=None
) -> KeyImages:
    """Stage 3: every keyframe batch in order, each reading only its frames; finished batches (from this or an
    earlier run) are not redone. Returns the translated keyframes (OUTDIR/keyframes/NNNN.png), in key order."""
    t0 = time.perf_counter()
    anchors: AnchorLatents | None = None
    bar = tqdm(total=len(plan.batches), desc="keyframe batches", unit="batch", disable=not progress)
    try:  # closed on every exit, so a Stop or Ctrl-C message starts on its own line
        for b in range(len(plan.batches)):
            finished = _read_finished_batch(plan, b)
            if finished is not None:
                anchors = finished
            else:
                if should_stop is not None and should_stop():
                    raise stopped_message(Cancelled("stopped"), plan.out, b, len(plan.batches))
                anchors = translate_batch(plan, b, reader, flows, models, anchors, progress, should_stop)
            bar.update(1)
    finally:
        bar.close()
    plan.seconds["translate"] = time.perf_counter() - t0
    return KeyImages([keyframe_path(plan.out, k) for k in plan.keys])


def first_unfinished_batch(plan: RunPlan) -> int:
    """The first batch an earlier run did not finish (``len(plan.batches)`` when all did): where a resumed run
    starts translating."""
    b = 0
    while b < len(plan.batches) and _read_finished_batch(plan, b) is not None:
        b += 1
    return b


def translate_one_batch(
    plan: RunPlan, b: int, pipeline, anchors: AnchorLatents | None = None, progress: bool = False
) -> AnchorLatents:
    """Stage 3 for batch ``b`` alone, as a cluster worker runs it: batch b-1's ``anchors`` as the worker that made
    them returned them (through Ray's object store), else read from the state folder, and the flow chain from there
    (shared storage), so any worker can take any ready batch. Returns batch b's anchors, on the CPU (read back when
    the batch had finished already: a retried task redoes nothing)."""
    done = _read_finished_batch(plan, b)
    if done is not None:
        return done
    if b > 0 and anchors is None:
        anchors = _read_finished_batch(plan, b - 1)
        if anchors is None:
            raise InputError(f"{plan.out}: batch {b} needs batch {b - 1}'s anchors, and that batch has not finished")
    estimator = get_flow_estimator(plan.cfg.flow, device=pipeline.device)
    with FrameReader(plan.info, cache=2 * plan.cfg.s_max + 2) as reader:
        flows = _KeyframeFlows(estimator, reader, plan.batches, plan.state)
        made = translate_batch(plan, b, reader, flows, _BatchModels(plan.cfg, pipeline), anchors, progress)
    return AnchorLatents(made.timesteps, [t.cpu() for t in made.first], [t.cpu() for t in made.last])


def translate_video(
    cfg: RunConfig,
    *,
    overwrite: bool = False,
    progress: bool = True,
    pipeline=None,
    load_pipeline=None,
    should_stop: Callable[[], bool] | None = None,
    keep_frames: bool = False,
) -> RunResult:
    """Run every stage for ``cfg`` (see the module docstring): read and plan, translate batches, propagate and
    assemble (frames go to the encoder as they are made; ``keep_frames`` also returns them in ``RunResult.frames``).

    ``pipeline`` reuses an already loaded FrescoPipeline; ``load_pipeline(cfg)`` replaces ``load_run_pipeline`` (e.g.
    a cache). Either way the model is loaded only once the input has been read and a batch needs it.
    ``should_stop`` (e.g. ``threading.Event().is_set``) is asked between keyframe batches, before every denoising
    step and before every propagated frame; True ends the run with :class:`Cancelled`, whose message says what was
    kept (every finished batch, as for an interrupted run) and how to go on.
    """
    from .models import resolve_device

    cfg = cfg.validate()
    device = resolve_device(cfg.device)
    # flow backends are loaded now: a missing GMFlow checkpoint fails before any work, not hours later
    estimator = get_flow_estimator(cfg.flow, device=device)
    propagation_flow = cfg.propagation_config().flow
    propagation_estimator = (
        estimator if propagation_flow == cfg.flow else get_flow_estimator(propagation_flow, device=device)
    )
    plan = read_and_plan(cfg, overwrite, progress)
    with plan.lock, FrameReader(plan.info, cache=2 * cfg.s_max + 2) as reader:
        flows = _KeyframeFlows(estimator, reader, plan.batches, plan.state)
        models = _BatchModels(cfg, pipeline, load_pipeline)
        translated = translate_batches(plan, reader, flows, models, progress, should_stop)

        def make_frames(start: int) -> Iterator[np.ndarray]:
            return propagate_frames(
                plan, reader, translated, propagation_estimator, device, progress, should_stop, start
            )

        return assemble(plan, make_frames, flows.report(), keep_frames, progress)
