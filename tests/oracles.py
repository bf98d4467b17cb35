"""Naive per-pixel / per-token reference implementations: slow, obvious, and the truth the vectorized code must match.

Plain Python loops over plain lists on purpose. ``benchmarks/correspondence.py`` loads this file to time the
vectorized build against it.
"""

from __future__ import annotations

import math

import numpy as np


def naive_select_keyframes(d: list[float], s_min: int, s_max: int) -> list[int]:
    """Alg. 1 written out with lists (0-based), the rules of the issue word for word."""
    m = len(d)
    if s_min == s_max:
        keys = list(range(0, m, s_max))
        if keys[-1] != m - 1:
            keys.append(m - 1)
        return keys
    keys = sorted({0, m - 1})
    cands = [i for i in range(m) if s_min <= i <= m - 1 - s_min]
    while any(b - a > s_max for a, b in zip(keys, keys[1:])):
        if cands:
            best = cands[0]
            for i in cands:
                if d[i] > d[best]:
                    best = i
            keys = sorted(keys + [best])
            cands = [j for j in cands if abs(j - best) >= s_min]
        else:
            gaps = [(b - a, a, b) for a, b in zip(keys, keys[1:])]
            big = max(g[0] for g in gaps)
            _, a, b = next(g for g in gaps if g[0] == big)
            keys = sorted(keys + [(a + b) // 2])
    return keys


def naive_plan_batches(keys: list[int], n: int) -> list[list[int]]:
    """§3.5: batch k (1-based, k >= 2) = {key 1, key (k-1)(N-2)+2, ..., key k(N-2)+2} in 1-based key numbers."""
    if len(keys) <= n:
        return [list(keys)]
    out = [keys[:n]]
    k = 2
    while (k - 1) * (n - 2) + 2 < len(keys):
        first_new = (k - 1) * (n - 2) + 2  # 0-based index of the first new key of batch k
        out.append([keys[0], keys[first_new - 1]] + keys[first_new : first_new + n - 2])
        k += 1
    return out


def _bilinear(img: np.ndarray, x: float, y: float) -> np.ndarray:
    """img[y, x] sampled bilinearly with coordinates clamped to the frame (border padding)."""
    h, w = img.shape[:2]
    x = min(max(x, 0.0), w - 1.0)
    y = min(max(y, 0.0), h - 1.0)
    x0, y0 = int(math.floor(x)), int(math.floor(y))
    x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
    ax, ay = x - x0, y - y0
    return (
        (1 - ax) * (1 - ay) * img[y0, x0]
        + ax * (1 - ay) * img[y0, x1]
        + (1 - ax) * ay * img[y1, x0]
        + ax * ay * img[y1, x1]
    )


def naive_occlusion(fwd, bwd, src, dst, alpha=0.01, beta=0.5, photo=0.25 * 255) -> np.ndarray:
    """Per-pixel forward-backward + out-of-frame + photometric occlusion of src w.r.t. dst ([H, W] bool)."""
    h, w = fwd.shape[:2]
    occ = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            fx, fy = float(fwd[y, x, 0]), float(fwd[y, x, 1])
            bx, by = _bilinear(bwd.astype(np.float64), x + fx, y + fy)
            mismatch = math.hypot(fx + bx, fy + by)
            scale = math.hypot(fx, fy) + math.hypot(bx, by)
            outside = not (0 <= x + fx <= w - 1 and 0 <= y + fy <= h - 1)
            warped = _bilinear(dst.astype(np.float64), x + fx, y + fy)
            photo_bad = photo is not None and np.abs(src[y, x].astype(np.float64) - warped).mean() > photo
            occ[y, x] = mismatch > alpha * scale + beta or outside or photo_bad
    return occ


def naive_pool(arr: np.ndarray, f: int, how: str) -> np.ndarray:
    """[B, H, W] or [B, H, W, C] -> [B, H/f, W/f(, C)] by a loop over every token and every pixel in it.

    Runs on Python lists (not numpy scalars), so the loop is slow only because it is a loop.
    """
    b, h, w = arr.shape[:3]
    data = arr.tolist()
    vector = arr.ndim == 4
    out = []
    for i in range(b):
        plane = data[i]
        rows = []
        for ty in range(h // f):
            row = []
            for tx in range(w // f):
                acc = [0.0] * arr.shape[3] if vector else 0.0
                for y in range(ty * f, ty * f + f):
                    line = plane[y]
                    for x in range(tx * f, tx * f + f):
                        v = line[x]
                        if vector:
                            for k in range(len(acc)):
                                acc[k] = max(acc[k], v[k]) if how == "max" else acc[k] + v[k]
                        else:
                            acc = max(acc, float(v)) if how == "max" else acc + v
                row.append(acc)
            rows.append(row)
        out.append(rows)
    return np.array(out, dtype=np.float64).reshape((b, h // f, w // f) + arr.shape[3:])


def naive_centre_sample(arr: np.ndarray, f: int) -> np.ndarray:
    """[B, H, W] -> [B, H/f, W/f]: bilinear sample at the token centre in pixel coordinates, (i + 0.5) f - 0.5."""
    b, h, w = arr.shape
    out = np.zeros((b, h // f, w // f))
    for i in range(b):
        for ty in range(h // f):
            for tx in range(w // f):
                out[i, ty, tx] = _bilinear(arr[i].astype(np.float64), (tx + 0.5) * f - 0.5, (ty + 0.5) * f - 0.5)
    return out


def naive_token_occlusion(occ: np.ndarray, f: int, rule: str) -> np.ndarray:
    """A token's occlusion from its pixels': "any" pixel, more than half the "area", or the "centre" sample > 0.5."""
    if rule == "any":
        return naive_pool(occ, f, "max") > 0
    if rule == "area":
        return naive_pool(occ, f, "sum") / (f * f) > 0.5
    return naive_centre_sample(occ, f) > 0.5


def naive_scale(
    frames: np.ndarray, fwd, bwd, occ_fwd, occ_bwd, f: int, attention_rule: str = "area", loss_rule: str = "any"
) -> dict:
    """Everything a ScaleCorrespondence holds, computed token by token."""
    n = frames.shape[0]
    flow_fwd = naive_pool(fwd, f, "sum") / (f * f) / f
    flow_bwd = naive_pool(bwd, f, "sum") / (f * f) / f
    o_fwd = naive_token_occlusion(occ_fwd, f, loss_rule)
    loss_bwd = naive_token_occlusion(occ_bwd, f, loss_rule)
    o_bwd = naive_token_occlusion(occ_bwd, f, attention_rule)  # what eq. 8 and 9 read
    colour = naive_pool(frames, f, "sum")  # exact integer sums
    h, w = frames.shape[1] // f, frames.shape[2] // f
    l = h * w

    unique = list(range(l))
    for i in range(1, n):
        for q in range(l):
            if o_bwd[i - 1, q // w, q % w]:
                unique.append(i * l + q)

    perm = [list(range(l))]
    inverse = [list(range(l))]
    segment = [[0] * l]
    for j in range(1, n):
        # where each token of frame j came from in frame j-1
        match = {}
        for q in range(l):
            y, x = divmod(q, w)
            tx = math.floor(x + flow_bwd[j - 1, y, x, 0] + 0.5)
            ty = math.floor(y + flow_bwd[j - 1, y, x, 1] + 0.5)
            if 0 <= tx < w and 0 <= ty < h and not o_bwd[j - 1, y, x]:
                match[q] = ty * w + tx
        # collisions: per target, the closest colour wins, then the lowest index
        winner = {}
        for q in sorted(match):
            m = match[q]
            cost = sum(abs(colour[j, q // w, q % w, c] - colour[j - 1, m // w, m % w, c]) for c in range(3))
            if m not in winner or cost < winner[m][0]:
                winner[m] = (cost, q)
        traj_of = {}
        for m, (_, q) in winner.items():
            traj_of[q] = inverse[j - 1][m]
        claimed = set(traj_of.values())
        free = [p for p in range(l) if p not in claimed]
        rest = [q for q in range(l) if q not in traj_of]
        for q, p in zip(rest, free):
            traj_of[q] = p
        inv = [traj_of[q] for q in range(l)]
        pm = [0] * l
        for q, p in enumerate(inv):
            pm[p] = q
        linked_traj = {traj_of[q] for q in (wq for _, wq in winner.values())}
        seg = [segment[-1][p] + (0 if p in linked_traj else 1) for p in range(l)]
        perm.append(pm)
        inverse.append(inv)
        segment.append(seg)
    return {
        "flow_fwd": flow_fwd,
        "flow_bwd": flow_bwd,
        "occ_fwd": o_fwd,
        "occ_bwd": loss_bwd,
        "attn_occ_bwd": o_bwd,
        "unique_index": np.array(unique),
        "traj_perm": np.array(perm),
        "traj_inverse": np.array(inverse),
        "traj_segment": np.array(segment),
    }


def naive_compose(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """[H, W, 2] a->b and b->c -> a->c, pixel by pixel: f(x) + s(x + f(x)) (bilinear, border-clamped)."""
    h, w = first.shape[:2]
    out = np.zeros_like(first, dtype=np.float64)
    s = second.astype(np.float64)
    for y in range(h):
        for x in range(w):
            fx, fy = float(first[y, x, 0]), float(first[y, x, 1])
            sx, sy = _bilinear(s, x + fx, y + fy)
            out[y, x] = (fx + sx, fy + sy)
    return out


def naive_select(src, dst, fwd, bwd, radius, fb_weight, fb_cap):
    """Per pixel the lowest-cost candidate flow (keyframe flow's rule), written out with loops.

    cost_k(x) = mean over the window (clipped to the frame) of mean_RGB |src - dst(. + f_k)|
                + fb_weight * min(min_m |f_k(x) + b_m(x + f_k(x))|, fb_cap); ties: the lowest k.
    """
    h, w = src.shape[:2]
    k_count = len(fwd)
    err = np.zeros((k_count, h, w))
    for k in range(k_count):
        for y in range(h):
            for x in range(w):
                fx, fy = float(fwd[k][y, x, 0]), float(fwd[k][y, x, 1])
                warped = _bilinear(dst.astype(np.float64), x + fx, y + fy)
                err[k, y, x] = np.abs(src[y, x].astype(np.float64) - warped).mean()
    choice = np.zeros((h, w), np.int64)
    flow = np.zeros((h, w, 2))
    for y in range(h):
        for x in range(w):
            best, best_cost = 0, math.inf
            for k in range(k_count):
                ys = range(max(0, y - radius), min(h, y + radius + 1))
                xs = range(max(0, x - radius), min(w, x + radius + 1))
                window = [err[k, yy, xx] for yy in ys for xx in xs]
                fx, fy = float(fwd[k][y, x, 0]), float(fwd[k][y, x, 1])
                trip = math.inf
                for b in bwd:
                    bx, by = _bilinear(b.astype(np.float64), x + fx, y + fy)
                    trip = min(trip, math.hypot(fx + bx, fy + by))
                cost = sum(window) / len(window) + fb_weight * min(trip, fb_cap)
                if cost < best_cost:
                    best, best_cost = k, cost
            choice[y, x] = best
            flow[y, x] = fwd[best][y, x]
    return flow, choice
