"""Random draws of SDD-FIQA: which positives and negatives each image is compared with.

Both label implementations (:mod:`trainer.labels`) consume these draws, so the fast
path can be checked against the per-sample reference exactly. Images are addressed in
*identity-sorted* order: identity ``k`` occupies rows ``starts[k] : starts[k] + sizes[k]``.
Draws are generated per repetition and block of identities from ``(seed, repetition,
block)``, so memory stays bounded by one block's arrays however large the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.sddfiqa import LabelParams

_DENSE_POOL = 4  # pools smaller than this many times the draw use a full shuffle


@dataclass(frozen=True)
class Layout:
    """Identity structure of a dataset sorted by identity."""

    starts: np.ndarray  # K
    sizes: np.ndarray  # K
    identity_of_row: np.ndarray  # N

    @property
    def n(self) -> int:
        return int(self.identity_of_row.shape[0])

    @staticmethod
    def from_sorted_ids(sorted_ids: np.ndarray) -> Layout:
        _, starts, sizes = np.unique(sorted_ids, return_index=True, return_counts=True)
        identity_of_row = np.repeat(np.arange(len(starts)), sizes)
        return Layout(starts.astype(np.int64), sizes.astype(np.int64), identity_of_row)


@dataclass(frozen=True)
class RepetitionDraws:
    """One repetition's draws for one block of identities, padded with -1.

    ``pos``: rows×P global indices of positives per image of the block. ``neg``:
    identities×Q per identity (shared) or rows×Q per image, depending on ``shared``.
    """

    pos: np.ndarray
    neg: np.ndarray
    shared: bool

    def negatives_of(self, local_row: int, local_identity: int) -> np.ndarray:
        picked = self.neg[local_identity if self.shared else local_row]
        return picked[picked >= 0]

    def positives_of(self, local_row: int) -> np.ndarray:
        picked = self.pos[local_row]
        return picked[picked >= 0]


def _distinct_rows(rng: np.random.Generator, pool_sizes: np.ndarray, count: int) -> np.ndarray:
    """For each row, ``count`` distinct integers in [0, pool_size) (all when fewer), −1 padded."""
    rows = len(pool_sizes)
    out = np.full((rows, count), -1, dtype=np.int64)
    small = pool_sizes <= count
    # The pool is no larger than the draw: take all of it (order is irrelevant to W1).
    take_all = np.arange(count)[None, :] < pool_sizes[small, None]
    out[small] = np.where(take_all, np.arange(count)[None, :], -1)
    dense = ~small & (pool_sizes < _DENSE_POOL * count)
    for size in np.unique(pool_sizes[dense]):
        idx = np.nonzero(dense & (pool_sizes == size))[0]
        keys = rng.random((len(idx), int(size)))
        out[idx] = np.argpartition(keys, count - 1, axis=1)[:, :count]
    sparse = np.nonzero(~small & ~dense)[0]
    todo = sparse
    while todo.size:  # rejection: redraw the rows that drew a duplicate
        values = (rng.random((todo.size, count)) * pool_sizes[todo, None]).astype(np.int64)
        ordered = np.sort(values, axis=1)
        bad = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
        out[todo[~bad]] = values[~bad]
        todo = todo[bad]
    return out


IDENTITY_BLOCK = 512  # draws are made per block of identities: bounded memory, any order


def identity_blocks(layout: Layout) -> list[tuple[int, int]]:
    """(first identity, end identity) of every draw block."""
    k = len(layout.sizes)
    return [(b, min(k, b + IDENTITY_BLOCK)) for b in range(0, k, IDENTITY_BLOCK)]


def draw_block(layout: Layout, params: LabelParams, repetition: int, block: tuple[int, int]) -> RepetitionDraws:
    """Draws of one repetition for the images of identities ``block[0]:block[1]``.

    Deterministic for ``(params.seed, repetition, block start)``, so any implementation
    visiting blocks in any order (or in parallel) sees the same draws. Row indices in
    the result are global (identity-sorted) indices; ``pos`` has one row per image of
    the block, ``neg`` one row per identity (shared) or per image.
    """
    first_id, end_id = block
    rng = np.random.default_rng([params.seed, repetition, first_id])
    row_start = int(layout.starts[first_id])
    row_end = int(layout.starts[end_id - 1] + layout.sizes[end_id - 1])
    rows = np.arange(row_start, row_end)
    ident = layout.identity_of_row[rows]
    start_of_row = layout.starts[ident]
    size_of_row = layout.sizes[ident]

    # Positives: other images of the same identity (local index j, shifted past the image itself).
    width = max(1, min(params.positives, int(layout.sizes.max()) - 1))
    local = _distinct_rows(rng, np.maximum(size_of_row - 1, 0), width)
    own = (rows - start_of_row)[:, None]
    pos = np.where(local >= 0, start_of_row[:, None] + local + (local >= own), -1)

    # Negatives: images of other identities (index j in the complement, shifted past the identity).
    shared = params.negatives_shared_by == "identity"
    if shared:
        starts, sizes = layout.starts[first_id:end_id], layout.sizes[first_id:end_id]
    else:
        starts, sizes = start_of_row, size_of_row
    picked = _distinct_rows(rng, layout.n - sizes, params.negatives)
    neg = np.where(picked >= 0, picked + (picked >= starts[:, None]) * sizes[:, None], -1)
    return RepetitionDraws(pos.astype(np.int64), neg.astype(np.int64), shared)
