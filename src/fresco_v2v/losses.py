"""The losses of FRESCO-aware feature optimization (paper §3.3), as pure tensor functions.

Normalization: both losses are *means* over their elements (as in the authors' code) rather than the sums the paper
writes, so the weight λ_spat = 50 (§4) does not change meaning with resolution or batch size (the paper's sums weigh
L_spat by N/(N-1) * L/C against L_temp: 0.05 to 6.4 across SD1.5's decoder blocks at 512 px). The README's "How
strongly L_spat pulls against L_temp" has the relation to the authors' code and the measurement.

The optimized losses have analytic gradients (custom autograd functions), each tested against autograd on the naive
form: eq. 6 costs two batched matmuls a step, eq. 5 two sparse products.
"""

from __future__ import annotations

import functools
import warnings

import torch

from .flow import warp


def normalize_tokens(f: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Eq. 6's f~: [N, C, h, w] features -> [N, h*w, C] with every token a unit vector."""
    tokens = f.flatten(2).transpose(1, 2)  # [N, L, C]
    return tokens / tokens.norm(dim=-1, keepdim=True).clamp_min(eps)


def gram_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a aᵀ - b bᵀ||_F² per item without building the L x L Gram matrices.

    a, b: [N, L, C]. Uses ||AAᵀ - BBᵀ||² = ||AᵀA||² - 2||AᵀB||² + ||BᵀB||² (traces of products of the C x C
    matrices), so memory is O(C²) and time O(L C²) instead of O(L²) and O(L² C). Returns [N].
    """
    aa = a.transpose(1, 2) @ a  # [N, C, C]
    ab = a.transpose(1, 2) @ b
    bb = b.transpose(1, 2) @ b
    sq = lambda m: m.pow(2).sum(dim=(1, 2))  # noqa: E731
    # a squared norm: clamp the round-off of the subtraction (it can dip below 0 when a ~ b)
    return (sq(aa) - 2 * sq(ab) + sq(bb)).clamp_min(0)


def _unit_tokens(x: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, L, C] tokens -> (unit tokens, their norms [N, L, 1]), as :func:`normalize_tokens`."""
    norm = x.norm(dim=-1, keepdim=True).clamp_min(eps)
    return x / norm, norm


def _unit_tokens_backward(a: torch.Tensor, norm: torch.Tensor, grad_a: torch.Tensor) -> torch.Tensor:
    """Gradient through a = x / |x|: (g - a <a, g>) / |x| per token, with g = d/da (in place on grad_a)."""
    return grad_a.sub_(a * (a * grad_a).sum(dim=-1, keepdim=True)).div_(norm)


class _GramDistanceDirect(torch.autograd.Function):
    """sum over items of ||a aᵀ - b bᵀ||_F² with a = x / |x| per token, from the L x L Grams (eq. 6).

    x: [N, L, C] raw tokens; bb = b bᵀ: [N, L, L], constant. Analytic gradient d/da = 4 (a aᵀ - b bᵀ) a: two
    batched matmuls a step instead of autograd's three, and the normalization's backward in three passes.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, bb: torch.Tensor) -> torch.Tensor:
        a, norm = _unit_tokens(x)
        d = torch.baddbmm(bb, a, a.transpose(1, 2), beta=-1)  # a aᵀ - b bᵀ, [N, L, L]
        ctx.save_for_backward(a, norm, d)
        return torch.linalg.vector_norm(d).square()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, norm, d = ctx.saved_tensors
        grad_a = torch.bmm(d, a).mul_(4 * grad)  # d is symmetric: d/da sum(d²) = 2 (d + dᵀ) a
        return _unit_tokens_backward(a, norm, grad_a), None


class _GramDistanceChannels(torch.autograd.Function):
    """The same sum through the C x C matrices: ||aᵀa||² - 2||bᵀa||² + ||bᵀb||², gradient 4 (a aᵀa - b bᵀa).

    x: [N, L, C] raw tokens; b: [N, L, C] unit reference tokens; bb_sq = ||bᵀb||² summed over items, constant.
    Four L x C x C matmuls a step instead of six.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, b: torch.Tensor, bb_sq: torch.Tensor) -> torch.Tensor:
        a, norm = _unit_tokens(x)
        aa = a.transpose(1, 2) @ a  # [N, C, C]
        ba = b.transpose(1, 2) @ a
        ctx.save_for_backward(a, norm, b, aa, ba)
        # a squared norm: clamp the round-off of the subtraction (it can dip below 0 when a ~ b)
        return (aa.pow(2).sum() - 2 * ba.pow(2).sum() + bb_sq).clamp_min(0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, norm, b, aa, ba = ctx.saved_tensors
        grad_a = torch.baddbmm(a @ aa, b, ba, beta=1, alpha=-1).mul_(4 * grad)  # 4 (a aᵀa - b bᵀa)
        return _unit_tokens_backward(a, norm, grad_a), None, None


class _GramDistanceL1(torch.autograd.Function):
    """sum over items of |a aᵀ - b bᵀ| (the authors' L1 of eq. 6) with a = x / |x| per token, in row chunks.

    x: [N, L, C] raw tokens; b: [N, L, C] unit reference tokens; bb: b bᵀ [N, L, L] when it fits the memory
    budget, else None (its rows are recomputed per chunk). The gradient d/da = 2 sign(a aᵀ - b bᵀ) a is built
    chunk by chunk in the forward pass (the loss is always differentiated right after), so memory is O(chunk * L)
    per item and the backward is one elementwise pass.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, b: torch.Tensor, bb: torch.Tensor | None, chunk: int) -> torch.Tensor:
        a, norm = _unit_tokens(x)
        total = a.new_zeros(())
        grad_a = torch.empty_like(a)
        for s in range(0, a.shape[1], chunk):  # chunks of rows, not a loop over tokens
            rows = bb[:, s : s + chunk] if bb is not None else b[:, s : s + chunk] @ b.transpose(1, 2)
            d = torch.baddbmm(rows, a[:, s : s + chunk], a.transpose(1, 2), beta=-1)  # [N, chunk, L]
            total += d.abs().sum()
            # the sign matrix is symmetric: its row block s times a is row block s of the gradient / 2
            grad_a[:, s : s + chunk] = torch.bmm(d.sign_(), a).mul_(2)
        ctx.save_for_backward(a, norm, grad_a)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, norm, grad_a = ctx.saved_tensors
        return _unit_tokens_backward(a, norm, grad_a * grad), None, None, None


#: Memory budgets of the L1 form of eq. 6, in elements: the largest b bᵀ [N, L, L] kept (2**26 float32 = 256 MiB),
#: and the largest [N, chunk, L] block of a aᵀ - b bᵀ built at once.
L1_GRAM_ELEMENTS = 2**26
L1_CHUNK_ELEMENTS = 2**24


def spatial_loss_fn(f_ref: torch.Tensor, norm: str = "fro"):
    """Eq. 6 against fixed reference features, as a function of f, with the reference's terms computed once.

    For the squared Frobenius norm the cheaper of two exact forms is used, each with its analytic gradient: the
    L x L Grams when L <= 2C (2 L² C multiply-adds per item and step), else the C x C identity of
    :func:`gram_distance` (4 L C²). Returns ``loss(f)``, equal to ``spatial_consistency_loss(f, f_ref, norm)``.
    f may be in either memory format; a channels-last f gives its tokens without a copy.
    """
    b = normalize_tokens(f_ref)  # [N, L, C]
    n, l, c = b.shape
    tokens = lambda f: f.flatten(2).transpose(1, 2)  # noqa: E731  [N, L, C], a view
    if norm == "l1":
        bb = b @ b.transpose(1, 2) if n * l * l <= L1_GRAM_ELEMENTS else None
        chunk = max(1, min(l, L1_CHUNK_ELEMENTS // (n * l)))
        return lambda f: _GramDistanceL1.apply(tokens(f), b, bb, chunk) / (n * l * l)
    if norm != "fro":
        raise ValueError(f"norm: expected 'fro' or 'l1', got {norm!r}")
    if l <= 2 * c:
        bb = b @ b.transpose(1, 2)  # [N, L, L], constant
        return lambda f: _GramDistanceDirect.apply(tokens(f), bb) / (n * l * l)
    bb_sq = (b.transpose(1, 2) @ b).pow(2).sum()  # ||BᵀB||², constant
    return lambda f: _GramDistanceChannels.apply(tokens(f), b, bb_sq) / (n * l * l)


def gram_distance_l1(a: torch.Tensor, b: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """sum |a aᵀ - b bᵀ| per item (the authors' L1 variant), built in row chunks of ``chunk`` tokens.

    a, b: [N, L, C]. The L1 norm has no C x C shortcut: peak memory is O(chunk * L) per item. Returns [N].
    """
    total = a.new_zeros(a.shape[0])
    for s in range(0, a.shape[1], chunk):  # chunks of rows, not a loop over tokens
        total = total + (a[:, s : s + chunk] @ a.transpose(1, 2) - b[:, s : s + chunk] @ b.transpose(1, 2)).abs().sum(
            dim=(1, 2)
        )
    return total


def spatial_consistency_loss(f: torch.Tensor, f_ref: torch.Tensor, norm: str = "fro") -> torch.Tensor:
    """Eq. 6 without λ_spat: the Gram matrix of normalized features should match the input frame's.

    f, f_ref: [N, C, h, w] (f_ref is f^r from the reference pass). ``norm="fro"`` is the paper's squared Frobenius
    norm (default); ``"l1"`` the authors' code. Mean over the N * L * L Gram entries; returns a scalar.
    """
    a, b = normalize_tokens(f), normalize_tokens(f_ref.to(f.dtype))
    n, l, _ = a.shape
    if norm == "fro":
        dist = gram_distance(a, b)
    elif norm == "l1":
        dist = gram_distance_l1(a, b)
    else:
        raise ValueError(f"norm: expected 'fro' or 'l1', got {norm!r}")
    return dist.sum() / (n * l * l)


def temporal_consistency_loss(
    f: torch.Tensor,
    flow_bwd: torch.Tensor,
    visible_bwd: torch.Tensor,
    flow_fwd: torch.Tensor | None = None,
    visible_fwd: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 5: L1 between f_{i+1} and f_i warped along the flow, on the non-occluded tokens M_i^{i+1}.

    f: [N, C, h, w]; flow_bwd: [N-1, h, w, 2] (frame i+1 -> i, in tokens); visible_bwd: [N-1, h, w] bool.
    With ``flow_fwd``/``visible_fwd`` (frame i -> i+1) the symmetric term |M (f_i - w(f_{i+1}))| is added, as
    the authors' code does (the paper writes one direction). Mean over N-1 pairs * C * h * w; returns a scalar.
    """
    if f.shape[0] < 2:
        return f.sum() * 0
    w_prev = warp(f[:-1], flow_bwd)  # f_i brought onto frame i+1's grid
    loss = ((f[1:] - w_prev).abs() * visible_bwd[:, None].to(f.dtype)).mean()
    if flow_fwd is not None and visible_fwd is not None:
        w_next = warp(f[1:], flow_fwd)  # f_{i+1} brought onto frame i's grid
        loss = loss + ((f[:-1] - w_next).abs() * visible_fwd[:, None].to(f.dtype)).mean()
    return loss


def warp_matrix(flow: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, size: int) -> torch.Tensor:
    """:func:`~fresco_v2v.flow.warp` as a sparse matrix on tokens: W @ x[cols frames] lands on the rows frames.

    flow: [P, h, w, 2] (pair p: token (y, x) of frame ``rows[p]`` reads frame ``cols[p]`` at (x, y) + flow);
    rows, cols: [P] frame indices into a batch of ``size`` frames. Bilinear, border-clamped, align_corners (as
    ``warp``): four entries a row. Returns a [size*L, size*L] sparse COO matrix; a frame without a pair has empty
    rows.
    """
    p, h, w, _ = flow.shape
    length = h * w
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype)[:, None]
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype)
    tx = (xs + flow[..., 0]).clamp(0, w - 1)  # [P, h, w], border padding
    ty = (ys + flow[..., 1]).clamp(0, h - 1)
    x0 = tx.floor().clamp(max=max(w - 2, 0))
    y0 = ty.floor().clamp(max=max(h - 2, 0))
    fx, fy = (tx - x0).clamp(0, 1), (ty - y0).clamp(0, 1)
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    src = (cols.to(flow.device) * length).view(p, 1, 1)
    dst = (rows.to(flow.device) * length).view(p, 1, 1) + torch.arange(length, device=flow.device).view(1, h, w)
    col = torch.stack([src + y0 * w + x0, src + y0 * w + x1, src + y1 * w + x0, src + y1 * w + x1])
    val = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy])
    row = dst.expand(4, p, h, w)
    index = torch.stack([row.reshape(-1), col.reshape(-1)])
    shape = (size * length, size * length)
    return torch.sparse_coo_tensor(index, val.reshape(-1), shape, check_invariants=False).coalesce()


class _WarpResidualL1(torch.autograd.Function):
    """sum |M (x - W x)| over tokens and channels, for x [B*L, C] tokens and a fixed sparse warp W (eq. 5).

    mask: [B*L, 1] (0 on rows without a pair). The gradient is s - Wᵀ s with s = M sign(x - W x): one sparse
    product each way instead of a grid-sample backward and the slices' scatter.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, wt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        r = x - w @ x  # [B*L, C]
        s = torch.sign(r).mul_(mask)
        ctx.save_for_backward(s, wt)
        return torch.dot(s.view(-1), r.view(-1))  # sum M |r|

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        s, wt = ctx.saved_tensors
        gs = s * grad
        return gs - wt @ gs, None, None, None


@functools.cache
def sparse_products_work(device_type: str) -> bool:
    """Whether this device multiplies a sparse CSR matrix by a dense one (the fast eq. 5); probed once per type."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            eye = torch.eye(2, device=device_type).to_sparse_csr()
            return bool(torch.equal((eye @ torch.ones(2, 1, device=device_type)).cpu(), torch.ones(2, 1)))
    except (RuntimeError, NotImplementedError, TypeError):
        return False


def temporal_loss_fn(
    groups: int,
    flow_bwd: torch.Tensor,
    visible_bwd: torch.Tensor,
    flow_fwd: torch.Tensor | None = None,
    visible_fwd: torch.Tensor | None = None,
):
    """Eq. 5 for G groups (copies of the video, e.g. the CFG halves) of N frames, with the warps prepared once.

    flow_bwd: [N-1, h, w, 2] (frame i+1 -> i, in tokens); visible_bwd: [N-1, h, w] bool; the forward direction
    optional, as :func:`temporal_consistency_loss`. Returns ``loss(f)`` for f [G*N, C, h, w] float32 (the
    optimization's dtype; the warp matrices are float32), equal to the mean
    over the groups of ``temporal_consistency_loss`` (pairs inside each group only). The warps are sparse matrices
    on the tokens (:func:`warp_matrix`), so a channels-last f is used without a copy.
    """
    n = flow_bwd.shape[0] + 1
    size = groups * n
    h, w = flow_bwd.shape[1:3]
    length = h * w
    if n < 2:
        return lambda f: f.sum() * 0
    if not sparse_products_work(flow_bwd.device.type):

        def by_grid(f: torch.Tensor) -> torch.Tensor:
            fs = f.view(groups, n, *f.shape[1:])
            pairs = (flow_bwd, visible_bwd, flow_fwd, visible_fwd)
            return sum(temporal_consistency_loss(fs[g], *pairs) for g in range(groups)) / groups

        return by_grid
    frames = torch.arange(size).view(groups, n)

    def term(flow: torch.Tensor, visible: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor):
        rows, cols = rows.reshape(-1), cols.reshape(-1)
        m = warp_matrix(flow.float().repeat(groups, 1, 1, 1), rows, cols, size)
        mask = torch.zeros(size, length, device=flow.device)
        mask[rows.to(flow.device)] = visible.repeat(groups, 1, 1).reshape(-1, length).float()
        with warnings.catch_warnings():  # "sparse CSR support is in beta": the product we use is long stable
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
            return m.to_sparse_csr(), m.t().coalesce().to_sparse_csr(), mask.view(-1, 1)

    terms = [term(flow_bwd, visible_bwd, frames[:, 1:], frames[:, :-1])]
    if flow_fwd is not None and visible_fwd is not None:
        terms.append(term(flow_fwd, visible_fwd, frames[:, :-1], frames[:, 1:]))

    def loss(f: torch.Tensor) -> torch.Tensor:
        if f.shape[0] != size:
            raise ValueError(f"f: expected {groups} x {n} frames, got {f.shape[0]}")
        c = f.shape[1]
        x = f.permute(0, 2, 3, 1).reshape(size * length, c)  # tokens; a view when f is channels-last
        total = sum(_WarpResidualL1.apply(x, m, mt, mask.to(x.dtype)) for m, mt, mask in terms)
        return total / (groups * (n - 1) * c * length)

    return loss


def adaptive_instance_normalization(x: torch.Tensor, ref: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Give each item and channel of x [N, C, h, w] the mean and std of ref [N, C, h, w] (AdaIN).

    The authors apply it to the optimized feature against the original one, so optimization changes structure
    and correspondence but not feature statistics.
    """
    # population std (correction=0): defined for a 1x1 map too (the 1/64 block of a 64 px frame)
    mx, sx = x.mean(dim=(2, 3), keepdim=True), x.std(dim=(2, 3), keepdim=True, correction=0)
    mr, sr = ref.mean(dim=(2, 3), keepdim=True), ref.std(dim=(2, 3), keepdim=True, correction=0)
    return (x - mx) / (sx + eps) * sr + mr
