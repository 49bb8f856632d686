"""The fast path's pieces: one block of identities at a time, every repetition of its draws.

:func:`trainer.labels.fast_labels` hands each block of identities (:mod:`trainer.draws`)
to :func:`block_distances`, which builds the block's Gram matrices (Pos-Sim) and its
shared-negative products (Neg-Sim), then, per repetition, the Wasserstein distances of
its rows in chunks. Everything here is bounded by one block, whatever N is; embeddings
are read through :class:`Features` where they lie (an array or a memory-mapped store).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from trainer.draws import Layout, draw_block
from trainer.sddfiqa import LabelParams


@lru_cache(maxsize=4096)
def _quantile_pieces(m: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pieces of ∫|F_u⁻¹(t) − F_v⁻¹(t)| dt for sizes m and n.

    Both quantile functions are steps, at multiples of 1/m and 1/n; between merged
    breakpoints they take the values u_(a) and v_(b) of the sorted samples. Returns
    (a, b, interval length) for every piece; they depend only on the sizes.
    """
    breaks = np.unique(np.concatenate([np.arange(m + 1) / m, np.arange(n + 1) / n]))
    mids = (breaks[:-1] + breaks[1:]) / 2
    a = np.minimum((mids * m).astype(np.int64), m - 1)
    b = np.minimum((mids * n).astype(np.int64), n - 1)
    return a, b, np.diff(breaks)


def batch_wasserstein(u: np.ndarray, u_count: np.ndarray, v: np.ndarray, v_count: np.ndarray) -> np.ndarray:
    """W1 between row-wise empirical distributions (uniform weights), for many rows at once.

    ``u``: B×P values of which the first ``u_count[b]`` are valid (the rest ignored);
    likewise ``v``. Uses W1 = ∫₀¹ |F_u⁻¹(t) − F_v⁻¹(t)| dt: sort each side, then sum the
    gaps of the sorted values over the pieces where both quantile functions are constant.
    Rows are grouped by their (m, n) sizes; equals ``scipy.stats.wasserstein_distance``.
    """
    out = np.empty(len(u))
    pairs = u_count.astype(np.int64) * (v.shape[1] + 1) + v_count
    for key in np.unique(pairs):
        rows = np.nonzero(pairs == key)[0]
        m, n = int(u_count[rows[0]]), int(v_count[rows[0]])
        a, b, widths = _quantile_pieces(m, n)
        u_sorted = np.sort(u[rows, :m], axis=1)
        v_sorted = np.sort(v[rows, :n], axis=1)
        # Summed piece by piece in a fixed order, not as a matrix product, a numpy sum or an
        # einsum, whose rounding depends on how many rows are computed together: a row's
        # distance depends only on its own values, whatever block or chunk it is computed in
        # (tested). The loop costs about 1 ms per 10,000 rows.
        gaps = np.abs(u_sorted[:, a] - v_sorted[:, b])
        total = gaps[:, 0] * widths[0]
        for piece in range(1, len(widths)):
            total += gaps[:, piece] * widths[piece]
        out[rows] = total
    return out


class Features:
    """Embeddings for the fast path, read where they lie (an array or a memory-mapped store).

    ``order`` maps identity-sorted positions to rows of ``source``, so nothing is copied
    into identity order: every gather goes through it. Rows pass through float32 (the
    precision embeddings are kept in) and the maths is float64: similarities are dot
    products of float64 copies divided by both norms, the formula the reference
    evaluates one pair at a time.
    """

    def __init__(self, source: np.ndarray, order: np.ndarray, device: str | None = None,
                 chunk_rows: int = 1 << 16) -> None:
        self.device = device  # None: numpy; else a torch device ("cuda", "cpu") for the products
        self.source, self.order = source, order
        self.norms = np.empty(len(order))
        for start in range(0, len(order), chunk_rows):
            rows = self.rows64(np.arange(start, min(len(order), start + chunk_rows)))
            self.norms[start : start + chunk_rows] = np.sqrt(np.einsum("ij,ij->i", rows, rows))

    def rows32(self, index: np.ndarray) -> np.ndarray:
        """Rows at identity-sorted positions ``index`` (any shape) as float32."""
        return np.asarray(self.source[self.order[index]], dtype=np.float32)

    def rows64(self, index: np.ndarray) -> np.ndarray:
        """Rows at identity-sorted positions ``index`` (any shape) as float64."""
        return self.rows32(index).astype(np.float64)

    def matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Batched float64 product, on the torch device when one was chosen (a GPU)."""
        if self.device is None:
            return np.matmul(a, b)
        import torch

        with torch.no_grad():
            out = torch.from_numpy(a).to(self.device) @ torch.from_numpy(np.ascontiguousarray(b)).to(self.device)
            return out.cpu().numpy()


_GRAM_CHUNK = 2_000_000  # floats of Gram matrices computed in one batched product


class _BlockPositives:
    """Similarities within each identity of one block, from one Gram matrix per identity.

    Made when the block is visited and reused by all its repetitions, so memory is
    bounded by one block's identities (the sum of their sizes squared), not the dataset's.
    """

    def __init__(self, feats: Features, layout: Layout, block: tuple[int, int]) -> None:
        first_id, end_id = block
        self.layout, self.first_id = layout, first_id
        sizes = layout.sizes[first_id:end_id]
        self.offsets = np.concatenate([[0], np.cumsum(sizes**2)])
        self.flat = np.empty(int(self.offsets[-1]))
        for size in np.unique(sizes):
            ids = np.nonzero(sizes == size)[0]
            for chunk in np.array_split(ids, max(1, len(ids) * size * size // _GRAM_CHUNK)):
                index = layout.starts[first_id + chunk, None] + np.arange(size)
                rows = feats.rows64(index)
                norms = feats.norms[index]
                grams = np.matmul(rows, rows.transpose(0, 2, 1)) / (norms[:, :, None] * norms[:, None, :])
                for k, gram in zip(chunk, grams, strict=True):
                    self.flat[self.offsets[k] : self.offsets[k + 1]] = gram.ravel()

    def lookup(self, rows: np.ndarray, partners: np.ndarray) -> np.ndarray:
        ident = self.layout.identity_of_row[rows]
        start, size = self.layout.starts[ident], self.layout.sizes[ident]
        local_row = rows - start
        local_partner = np.where(partners >= 0, partners - start[:, None], 0)
        flat_index = self.offsets[ident - self.first_id][:, None] + local_row[:, None] * size[:, None] + local_partner
        return self.flat[flat_index]


_SIZE_GROUPS = 8  # identities of a block are batched in groups of similar size (little padding)


class _SharedNegatives:
    """Similarities of a block's images to their identity's shared negatives.

    The block's identities are batched in groups of similar size, padded to the
    group's largest identity; the images of each group are gathered once (float64) and
    reused by every repetition, only the negatives are gathered anew.
    """

    def __init__(self, feats: Features, layout: Layout, block: tuple[int, int]) -> None:
        self.feats = feats
        first_id, end_id = block
        self.row_start = int(layout.starts[first_id])
        sizes = layout.sizes[first_id:end_id]
        self.groups = []
        for group in np.array_split(np.argsort(sizes, kind="stable"), min(_SIZE_GROUPS, len(sizes))):
            if group.size == 0:
                continue
            width = int(sizes[group].max())
            local = np.minimum(np.arange(width)[None, :], sizes[group, None] - 1)
            rows = layout.starts[first_id + group, None] + local  # padding repeats the last image
            keep = np.arange(width)[None, :] < sizes[group, None]
            self.groups.append((group, rows, keep, feats.rows64(rows), feats.norms[rows][:, :, None]))

    def sims(self, neg: np.ndarray, n_rows: int) -> np.ndarray:
        out = np.empty((n_rows, neg.shape[1]))
        for group, rows, keep, images, image_norms in self.groups:
            partner_rows = np.maximum(neg[group], 0)
            dots = self.feats.matmul(images, self.feats.rows64(partner_rows).transpose(0, 2, 1))
            sims = dots / (image_norms * self.feats.norms[partner_rows][:, None, :])
            out[rows[keep] - self.row_start] = sims[keep]
        return out


_ROW_CHUNK = 8192  # rows of a block handled together after its draws


@dataclass
class BlockResult:
    """One identity block's outputs, rows in identity-sorted positions ``rows``."""

    rows: np.ndarray
    distances: np.ndarray  # R×rows
    pos_sum: np.ndarray  # Σ over repetitions of the mean Pos-Sim
    neg_sum: np.ndarray
    n_pos: np.ndarray


def block_distances(feats: Features, layout: Layout, params: LabelParams, block: tuple[int, int]) -> BlockResult:
    """All repetitions' distances, mean sims and positive counts of one identity block."""
    first_id, end_id = block
    row_start = int(layout.starts[first_id])
    rows = np.arange(row_start, int(layout.starts[end_id - 1] + layout.sizes[end_id - 1]))
    distances = np.full((params.repetitions, len(rows)), np.nan)
    pos_sum = np.zeros(len(rows))
    neg_sum = np.zeros(len(rows))
    n_pos = np.zeros(len(rows), dtype=np.int32)
    use = np.nonzero(layout.sizes[layout.identity_of_row[rows]] >= 2)[0]
    pos_sum[np.setdiff1d(np.arange(len(rows)), use)] = np.nan
    neg_sum[np.isnan(pos_sum)] = np.nan
    positives = _BlockPositives(feats, layout, block)
    shared = _SharedNegatives(feats, layout, block) if params.negatives_shared_by == "identity" else None
    for rep in range(params.repetitions):
        draws = draw_block(layout, params, rep, block)
        if shared is not None:
            neg_sims = shared.sims(draws.neg, len(rows))
        # Row-wise from here: chunks of rows keep the temporaries small (same numbers).
        for chunk in range(0, len(use), _ROW_CHUNK):
            part = use[chunk : chunk + _ROW_CHUNK]
            if shared is not None:
                neg_idx = draws.neg[layout.identity_of_row[rows[part]] - first_id]
                neg_part = neg_sims[part]
            else:
                neg_idx = draws.neg[part]
                partner_rows = np.maximum(neg_idx, 0)
                dots = feats.matmul(feats.rows64(partner_rows), feats.rows64(rows[part])[:, :, None])[..., 0]
                neg_part = dots / (feats.norms[partner_rows] * feats.norms[rows[part]][:, None])
            pos_idx = draws.pos[part]
            pos_count = (pos_idx >= 0).sum(axis=1)
            neg_count = (neg_idx >= 0).sum(axis=1)
            pos_sims = positives.lookup(rows[part], pos_idx)
            distance = batch_wasserstein(pos_sims, pos_count, neg_part, neg_count)
            pos_mean = np.where(pos_idx >= 0, pos_sims, 0).sum(axis=1) / pos_count
            neg_mean = np.where(neg_idx >= 0, neg_part, 0).sum(axis=1) / neg_count
            if params.sign_guard:
                distance = np.where(pos_mean < neg_mean, 0.0, distance)
            distances[rep, part] = distance
            pos_sum[part] += pos_mean
            neg_sum[part] += neg_mean
            n_pos[part] = pos_count
    return BlockResult(rows, distances, pos_sum, neg_sum, n_pos)
