"""How good is the correspondence between keyframes? Known motion, the shared clips, and the cost of the flow.

    python benchmarks/correspondence_quality.py [--part known real time] [--threads 2] [--json]

a) known: a real frame of each shared clip filmed by a synthetic camera (``fresco_v2v.known_motion``: fast pan,
   slow zoom, small rotation; a patch of another clip moving on its own path over it), so the true flow and
   visibility between any two frames are exact. For keys every 5, 10 and 20 frames: mean end-point error (EPE) and
   the share above 3 px over the truly visible pixels, and the precision / recall of the predicted visible mask,
   for direct DIS (each pair estimated across the gap, the authors' occlusion thresholds: what main did) and
   ``keyframe_flows``. The anchor pairs of later batches (key 0 with the previous batch's last key; batches of 5
   keys every 10 frames put them 40, 70 and 100 frames apart) as ``batch_keyframe_flows`` builds them.
   Tokens (keys every 10, batch of 8): the unique region of eq. 8 against the truth's and the links of eq. 9
   (precision / recall at 1/16 and 1/8; a link is right when it reaches a token within 0.75 token of the true
   position, the true match being visible by the area rule).
   The keyframe-flow thresholds were tuned on the dog and music canvases; boxer and car-turn are held out.
b) real: the four shared clips at 512 px, first Alg. 1 batch (s_min 5, s_max 20, N 8): occluded pixels, unique
   region, unbroken trajectories, frames a token's trajectory links, and the mean colour difference of linked
   tokens (so longer but wrong links are not rewarded); before (direct DIS, "any" token rule) and after
   (keyframe flow, "area" rule), at 1/16.
c) time: flow seconds per video frame at 512x512 on this CPU for DIS (consecutive flows, and keyframe flow all in);
   GMFlow (random weights: time only) per pair, both directions in one pass.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from fresco_v2v.correspondence import build_correspondence
from fresco_v2v.flow import (
    BidirectionalFlow,
    DISFlow,
    KeyframeFlowStats,
    batch_keyframe_flows,
    keyframe_flows,
    sequence_flows,
)
from fresco_v2v.keyframes import frame_distances, plan_batches, select_keyframes
from fresco_v2v.known_motion import camera_clip
from fresco_v2v.video import read_video

VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"
CLIPS = ("dog", "music", "boxer-punching-towards-camera", "car-turn")
TUNED_ON = ("dog", "music")  # the keyframe-flow thresholds were chosen on these canvases; the others are held out
PATCH_FROM = {"dog": "music", "music": "dog", "boxer-punching-towards-camera": "car-turn", "car-turn": "dog"}
#: (name, camera path, speed): the benchmark's motions; "stress" ones are reported without targets.
MOTIONS = (("fast pan", "pan", 2.0), ("slow zoom", "zoom", 1.0), ("small rotation", "rotation", 1.0))
STRESS = (("fast zoom", "zoom", 2.0), ("fast rotation", "rotation", 2.0))
GAPS = (5, 10, 20)
ANCHOR_BATCH = 5
SIZE = (384, 384)


def machine(threads: int) -> str:
    return (
        f"machine: {platform.machine()} {os.cpu_count()} cores; device: cpu; dtype: float32; "
        f"torch {torch.__version__}, {threads} threads"
    )


def first_frame(name: str, index: int = 0) -> np.ndarray | None:
    path = VIDEOS / f"{name}.mp4"
    if not path.is_file():
        return None
    return read_video(path, short_side=512, max_frames=index + 1).frames[index]


# ------------------------------------------------------------------------------------------------- pixel metrics


def pixel_scores(flow: torch.Tensor, occ: torch.Tensor, truth: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """[sum EPE, count >3 px, visible pixels, predicted-visible & truly visible, predicted visible] of one pair."""
    epe = np.linalg.norm(flow.numpy() - truth, axis=-1)[visible]
    pred = ~occ.numpy()
    return np.array([epe.sum(), (epe > 3).sum(), visible.sum(), (pred & visible).sum(), pred.sum()], np.float64)


def summarize(acc: np.ndarray) -> dict:
    return {
        "epe": round(acc[0] / acc[2], 3),
        "over_3px": round(acc[1] / acc[2], 4),
        "precision": round(acc[3] / max(acc[4], 1), 4),
        "recall": round(acc[3] / acc[2], 4),
    }


def truth_flows(clip, keys) -> BidirectionalFlow:
    parts = [[], [], [], []]
    for a, b in zip(keys, keys[1:]):
        f, vf = clip.true_flow(a, b)
        g, vb = clip.true_flow(b, a)
        for lst, v in zip(parts, (f, g, ~vf, ~vb)):
            lst.append(torch.from_numpy(v))
    return BidirectionalFlow(*(torch.stack(p) for p in parts))


# ------------------------------------------------------------------------------------------------- token metrics


def links(sc):
    """Per frame pair j: (linked [L] bool for tokens q of frame j+1, their token m in frame j [L])."""
    out = []
    for j in range(sc.num_frames - 1):
        p = sc.traj_inverse[j + 1]
        out.append((sc.traj_segment[j + 1, p] == sc.traj_segment[j, p], sc.traj_perm[j, p]))
    return out


def link_scores(pred, truth, true_flow_tokens: torch.Tensor) -> np.ndarray:
    """[right predicted links, predicted links, recalled true links, true links] at one scale.

    true_flow_tokens: [N-1, h, w, 2] the true backward flow (frame j+1 -> j) averaged over each token, in tokens.
    A link q -> m is right when m's centre is within 0.75 token (each axis) of q's true position in frame j and q is
    visible there by the truth's area rule.
    """
    h, w = truth.size
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    acc = np.zeros(4)
    for j, ((lp, mp), (lt, _)) in enumerate(zip(links(pred), links(truth))):
        tx = (xs + true_flow_tokens[j, ..., 0]).reshape(-1)
        ty = (ys + true_flow_tokens[j, ..., 1]).reshape(-1)
        visible = ~truth.attn_occ_bwd[j].reshape(-1)
        right = visible & ((mp % w - tx).abs() <= 0.75) & ((mp // w - ty).abs() <= 0.75)
        acc += [(lp & right).sum(), lp.sum(), (lt & lp & right).sum(), lt.sum()]
    return acc


def token_report(frames, keys, flows: BidirectionalFlow, truth: BidirectionalFlow, rule: str) -> dict:
    out = {}
    corr = build_correspondence(frames[keys], flows, factors=(16, 8), attention_occlusion=rule)
    true_corr = build_correspondence(frames[keys], truth, factors=(16, 8), attention_occlusion="area")
    for f in (16, 8):
        sc, st = corr[f], true_corr[f]
        n, l = sc.num_frames, sc.num_tokens
        a = link_scores(sc, st, st.flow_bwd)
        out[f"1/{f}"] = {
            "unique": round(len(sc.unique_index) / (n * l), 4),
            "unique_truth": round(len(st.unique_index) / (n * l), 4),
            "unique_rel_error": round(abs(len(sc.unique_index) - len(st.unique_index)) / len(st.unique_index), 4),
            "link_precision": round(a[0] / max(a[1], 1), 4),
            "link_recall": round(a[2] / max(a[3], 1), 4),
        }
    return out


# ------------------------------------------------------------------------------------------------- parts


class CachedPairs:
    """DIS with a cache of the pairs of frames of one clip (benchmark only: the gaps share the consecutive pairs);
    never used for timing. Only views into ``frames`` are cached, keyed by frame index (a copy's address can be
    reused by a later copy, so copies are computed afresh)."""

    def __init__(self, frames: np.ndarray):
        self.dis = DISFlow()
        self.name = self.dis.name
        self.frames = frames
        self.cache = {}

    def index(self, frame: np.ndarray) -> int | None:
        if frame.base is not self.frames and frame.base is not getattr(self.frames, "base", None):
            return None
        offset = frame.__array_interface__["data"][0] - self.frames.__array_interface__["data"][0]
        i, rest = divmod(offset, self.frames[0].nbytes)
        return i if rest == 0 and 0 <= i < len(self.frames) and frame.shape == self.frames[0].shape else None

    def __call__(self, src, dst):
        key = (self.index(src), self.index(dst))
        if None in key:
            return self.dis(src, dst)
        if key not in self.cache:
            self.cache[key] = self.dis(src, dst)
        return self.cache[key]

    def estimate_from(self, src, dst, initial):
        return self.dis.estimate_from(src, dst, initial)


def known_motion_part(threads: int) -> dict:
    results: dict = {}
    for canvas_name in CLIPS:
        canvas, patch = first_frame(canvas_name), first_frame(PATCH_FROM[canvas_name], 20)
        if canvas is None or patch is None:
            print(f"{canvas_name}: clip not found, skipped")
            continue
        split = "tuning" if canvas_name in TUNED_ON else "held-out"
        for label, path, speed in MOTIONS + STRESS:
            t0 = time.perf_counter()
            clip = camera_clip(canvas, patch, path, 131, SIZE, speed=speed, seed=CLIPS.index(canvas_name))
            frames = clip.frames
            est = CachedPairs(frames)
            row = {"split": split, "stress": (label, path, speed) in STRESS}
            for gap in GAPS:
                keys = list(range(0, 81, gap))
                truth = [clip.true_flow(a, b) for a, b in zip(keys, keys[1:])]
                direct = sequence_flows(frames[keys], est)  # main's: straight across, authors' thresholds
                kf = keyframe_flows(frames[: keys[-1] + 1], keys, est)
                for name, fl in (("direct", direct), ("keyframe", kf)):
                    acc = sum(pixel_scores(fl.fwd[i], fl.occ_fwd[i], *truth[i]) for i in range(len(truth)))
                    row[f"{name}_gap{gap}"] = summarize(acc)
                if gap == 10:
                    batch = keys[:8]
                    tf = truth_flows(clip, batch)
                    sub = BidirectionalFlow(*(getattr(kf, k)[:7] for k in ("fwd", "bwd", "occ_fwd", "occ_bwd")))
                    dsub = BidirectionalFlow(*(getattr(direct, k)[:7] for k in ("fwd", "bwd", "occ_fwd", "occ_bwd")))
                    row["tokens_keyframe_area"] = token_report(frames, batch, sub, tf, "area")
                    row["tokens_direct_any"] = token_report(frames, batch, dsub, tf, "any")
            # anchors: batches of 5 keys every 10 frames (anchor pairs 40, 70, 100 frames apart), built as
            # translate_video builds them
            keys = list(range(0, 131, 10))
            chain = None
            for b, batch in enumerate(plan_batches(keys, ANCHOR_BATCH)):
                fl = batch_keyframe_flows(frames, batch, chain, est)
                if b > 0:
                    tf, vis = clip.true_flow(batch[0], batch[1])
                    d = sequence_flows(frames[[batch[0], batch[1]]], est)
                    row[f"anchor_{batch[1]}"] = {
                        "keyframe": summarize(pixel_scores(fl.fwd[0], fl.occ_fwd[0], tf, vis)),
                        "direct": summarize(pixel_scores(d.fwd[0], d.occ_fwd[0], tf, vis)),
                    }
                chain = fl
            results[f"{canvas_name} / {label}"] = row
            g = {gp: row[f"keyframe_gap{gp}"] for gp in GAPS}
            print(
                f"{canvas_name:<30} {label:<15} {split:<8}  keyframe EPE "
                + " ".join(f"g{gp} {g[gp]['epe']:.2f}" for gp in GAPS)
                + f"  recall/precision g20 {g[20]['recall']:.3f}/{g[20]['precision']:.3f}"
                + f"  direct EPE g10 {row['direct_gap10']['epe']:.2f} g20 {row['direct_gap20']['epe']:.2f}"
                + f"  ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    return results


def aggregate(results: dict) -> dict:
    """Means over the clips of each split (stress motions apart), the figures the targets are stated on."""
    out = {}
    for split in ("tuning", "held-out"):
        for stress in (False, True):
            rows = [r for r in results.values() if r["split"] == split and r["stress"] == stress]
            if not rows:
                continue
            key = f"{split}{' stress' if stress else ''}"
            agg = {}
            for field in rows[0]:
                if field.startswith(("direct_gap", "keyframe_gap")):
                    agg[field] = {m: round(float(np.mean([r[field][m] for r in rows])), 4) for m in rows[0][field]}
                    agg[field]["epe_max"] = max(r[field]["epe"] for r in rows)
                    agg[field]["recall_min"] = min(r[field]["recall"] for r in rows)
                    agg[field]["precision_min"] = min(r[field]["precision"] for r in rows)
            for tk in ("tokens_keyframe_area", "tokens_direct_any"):
                agg[tk] = {
                    s: {m: round(float(np.mean([r[tk][s][m] for r in rows])), 4) for m in rows[0][tk][s]}
                    for s in rows[0][tk]
                }
                for s in rows[0][tk]:
                    agg[tk][s]["link_precision_min"] = min(r[tk][s]["link_precision"] for r in rows)
                    agg[tk][s]["link_recall_min"] = min(r[tk][s]["link_recall"] for r in rows)
                    agg[tk][s]["unique_rel_error_max"] = max(r[tk][s]["unique_rel_error"] for r in rows)
            for anchor in [f for f in rows[0] if f.startswith("anchor_")]:
                agg[anchor] = {
                    how: {m: round(float(np.mean([r[anchor][how][m] for r in rows])), 4) for m in rows[0][anchor][how]}
                    for how in ("keyframe", "direct")
                }
            out[key] = agg
    return out


def batch_stats(corr, colours: torch.Tensor, factor: int = 16) -> dict:
    """The issue's table columns for one correspondence, at ``factor``; colours: [N, h, w, 3] token mean colours."""
    sc = corr[factor]
    n, l = sc.num_frames, sc.num_tokens
    seg = sc.traj_segment  # [N, L]
    # frames a token's trajectory links: the length of its unbroken segment, averaged over all N*L tokens
    lengths = torch.stack([(seg == seg[j : j + 1]).sum(0) for j in range(n)])  # [N, L]: per (frame, trajectory)
    diffs = []
    for j, (lk, m) in enumerate(links(sc)):
        cur, prev = colours[j + 1].reshape(l, 3), colours[j].reshape(l, 3)[m]
        diffs.append((cur - prev).abs().mean(-1)[lk])
    colour = torch.cat(diffs) if diffs else torch.zeros(0)
    return {
        "pixels_occluded": round(float(corr.flows.occ_bwd.float().mean()), 4),
        "unique_region": round(len(sc.unique_index) / (n * l), 4),
        "unbroken": round(float((seg[-1] == 0).float().mean()), 4),
        "frames_linked": round(float(lengths.float().mean()), 3),
        "linked_colour_diff": round(float(colour.float().mean()), 3) if len(colour) else None,
    }


def same_token_colour(before, after, colours: torch.Tensor) -> dict:
    """Colour difference of the links of the tokens linked both before and after (each with its own target), and
    of the tokens only linked after: does the longer correspondence link the same tokens worse, or new ones?"""
    l = before.num_tokens
    both_b, both_a, new = [], [], []
    for j, ((lb, mb), (la, ma)) in enumerate(zip(links(before), links(after))):
        cur = colours[j + 1].reshape(l, 3)
        prev = colours[j].reshape(l, 3)
        diff_b, diff_a = (cur - prev[mb]).abs().mean(-1), (cur - prev[ma]).abs().mean(-1)
        both_b.append(diff_b[lb & la])
        both_a.append(diff_a[lb & la])
        new.append(diff_a[la & ~lb])
    mean = lambda xs: round(float(torch.cat(xs).mean()), 3) if sum(len(x) for x in xs) else None  # noqa: E731
    return {"linked_both_before": mean(both_b), "linked_both_after": mean(both_a), "linked_only_after": mean(new)}


def real_clips_part() -> dict:
    out = {}
    for name in CLIPS:
        path = VIDEOS / f"{name}.mp4"
        if not path.is_file():
            print(f"{name}: not found, skipped")
            continue
        clip = read_video(path, short_side=512)
        keys = select_keyframes(frame_distances(clip.frames), 5, 20)
        batch = plan_batches(keys, 8)[0]
        h, w = clip.frames.shape[1:3]
        frames = clip.frames
        row = {"batch": batch}
        direct = sequence_flows(frames[batch])
        kf = keyframe_flows(frames[batch[0] : batch[-1] + 1], batch)
        t = torch.from_numpy(frames[batch]).float().permute(0, 3, 1, 2)
        colours = torch.nn.functional.avg_pool2d(t, 16).permute(0, 2, 3, 1)
        corrs = {}
        for label, flows, rule in (("before", direct, "any"), ("after", kf, "area")):
            corrs[label] = build_correspondence(frames[batch], flows, factors=(16,), attention_occlusion=rule)
            row[label] = batch_stats(corrs[label], colours)
        row["same_tokens"] = same_token_colour(corrs["before"][16], corrs["after"][16], colours)
        out[name] = row
        b, a, same = row["before"], row["after"], row["same_tokens"]
        print(
            f"{name:<30} {w}x{h} keys {batch}\n"
            f"{'':<4} occluded {b['pixels_occluded']:.2f} -> {a['pixels_occluded']:.2f}   unique "
            f"{b['unique_region']:.2f} -> {a['unique_region']:.2f}   unbroken {b['unbroken']:.2f} -> "
            f"{a['unbroken']:.2f}   frames linked {b['frames_linked']:.2f} -> {a['frames_linked']:.2f} of "
            f"{len(batch)}   linked colour diff {b['linked_colour_diff']:.2f} -> {a['linked_colour_diff']:.2f} "
            f"(tokens linked in both: {same['linked_both_before']:.2f} -> {same['linked_both_after']:.2f}; "
            f"linked only after: {same['linked_only_after']:.2f})",
            flush=True,
        )
    return out


def time_part(threads: int) -> dict:
    from fresco_v2v.flow.gmflow import GMFlow, GMFlowEstimator

    out = {}
    canvas = first_frame("dog")
    patch = first_frame("music", 20)
    if canvas is None:
        from fresco_v2v.testing import textured_image

        canvas, patch = textured_image(512, 512, 0), textured_image(512, 512, 1)
    clip = camera_clip(canvas, patch, "pan", 41, (512, 512), speed=2.0)
    dis = DISFlow()
    t0 = time.perf_counter()
    for i in range(40):
        dis(clip.frames[i], clip.frames[i + 1])
        dis(clip.frames[i + 1], clip.frames[i])
    out["dis_consecutive_s_per_frame"] = round((time.perf_counter() - t0) / 40, 4)
    for gap in (5, 10, 20):
        stats = KeyframeFlowStats()
        t0 = time.perf_counter()
        keyframe_flows(clip.frames, list(range(0, 41, gap)), DISFlow(), stats=stats)
        out[f"keyframe_flow_gap{gap}_s_per_frame"] = round((time.perf_counter() - t0) / 40, 4)
        out[f"keyframe_flow_gap{gap}_s_per_gap"] = round(stats.seconds_gaps / (40 // gap), 4)
    gm = GMFlowEstimator(GMFlow(), "cpu")
    gm.bidirectional(clip.frames[0], clip.frames[1])  # warm-up
    t0 = time.perf_counter()
    for i in range(3):
        gm.bidirectional(clip.frames[i], clip.frames[i + 1])
    out["gmflow_cpu_s_per_pair_both_directions"] = round((time.perf_counter() - t0) / 3, 3)
    print(
        f"DIS consecutive flows (both directions) {out['dis_consecutive_s_per_frame']:.3f} s per frame; keyframe "
        "flow all in: "
        + ", ".join(f"gap {g} {out[f'keyframe_flow_gap{g}_s_per_frame']:.3f} s per frame" for g in (5, 10, 20))
        + f"; GMFlow (random weights) {out['gmflow_cpu_s_per_pair_both_directions']:.2f} s per pair, 512x512, CPU"
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", nargs="*", default=["known", "real", "time"], choices=["known", "real", "time"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print every figure as JSON on the last line")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(machine(args.threads))
    out: dict = {}
    if "known" in args.part:
        out["known"] = known_motion_part(args.threads)
        out["known_summary"] = aggregate(out["known"])
        for key, agg in out["known_summary"].items():
            print(f"== {key}: " + json.dumps(agg))
    if "real" in args.part:
        out["real"] = real_clips_part()
    if "time" in args.part:
        out["time"] = time_part(args.threads)
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
