"""SDD-FIQA pseudo-labels: Wasserstein distance between Pos-Sim and Neg-Sim.

For image i, Pos-Sim are its cosine similarities to other images of its identity and
Neg-Sim to images of other identities (draws in :mod:`trainer.draws`). The label is the
1-D Wasserstein-1 distance between the two empirical distributions, min–max scaled per
repetition and averaged over repetitions (constants in :mod:`trainer.sddfiqa`).

Two implementations consume the same draws:

* :func:`reference_labels`: straightforward, per image and per pair, with
  ``scipy.stats.wasserstein_distance``, written to be read against the official code.
* :func:`fast_labels`: the same numbers for a whole block of images at once:
  positives from per-identity Gram matrices, negatives as batched matrix products
  over identities, W1 as a vectorised integral of the difference of the two CDFs.
  Memory is bounded by the block size (plus O(N) results).
"""

from __future__ import annotations

import os
import tempfile
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from trainer.draws import Layout, draw_block, identity_blocks
from trainer.label_blocks import BlockResult, Features, batch_wasserstein, block_distances
from trainer.sddfiqa import LabelParams

__all__ = ["LabelResult", "batch_wasserstein", "fast_labels", "reference_labels"]

ProgressFn = Callable[[int], None]
DEFAULT_PARAMS = LabelParams()


@dataclass
class LabelResult:
    """Per-image outputs in the caller's original order (NaN where no label)."""

    labels: np.ndarray  # 0..100, NaN for images of one-image identities
    mean_pos_sim: np.ndarray
    mean_neg_sim: np.ndarray
    n_pos: np.ndarray  # positives per image (0 for one-image identities)
    labelled: np.ndarray  # bool mask
    distances: np.ndarray | None  # R×N raw W1 distances (NaN where no label); None when not kept


def _prepare(embeddings: np.ndarray, identities: np.ndarray) -> tuple[np.ndarray, Layout, np.ndarray]:
    if embeddings.ndim != 2 or len(embeddings) != len(identities):
        raise ValueError("embeddings must be N×D with one identity per row")
    order = np.argsort(identities, kind="stable")
    layout = Layout.from_sorted_ids(np.asarray(identities)[order])
    if int((layout.sizes >= 2).sum()) < 1 or len(layout.sizes) < 2:
        raise ValueError("pseudo-labels need at least two identities, one of them with two or more images")
    return order, layout, embeddings[order]


def _layout(embeddings: np.ndarray, identities: np.ndarray,
            usable: np.ndarray | None) -> tuple[np.ndarray, Layout]:
    """Rows in identity-sorted order (stable) and the identity layout of the usable rows."""
    identities = np.asarray(identities)
    if embeddings.ndim != 2 or len(embeddings) != len(identities):
        raise ValueError("embeddings must be N×D with one identity per row")
    if usable is None:
        order = np.argsort(identities, kind="stable")
    else:
        rows = np.nonzero(np.asarray(usable, dtype=bool))[0]
        order = rows[np.argsort(identities[rows], kind="stable")]
    layout = Layout.from_sorted_ids(identities[order])
    if int((layout.sizes >= 2).sum()) < 1 or len(layout.sizes) < 2:
        raise ValueError("pseudo-labels need at least two identities, one of them with two or more images")
    return order, layout


def _scale(distances: np.ndarray, labelled: np.ndarray, params: LabelParams) -> np.ndarray:
    """Min–max scale one repetition's distances of labelled images to the label range."""
    values = distances[labelled]
    if params.clip_percentile is not None:
        low, high = np.percentile(values, [params.clip_percentile, 100 - params.clip_percentile])
        values = np.clip(values, low, high)
    lo, hi = params.label_range
    span = values.max() - values.min()
    scaled = np.full(distances.shape, np.nan)
    scaled[labelled] = lo + (values - values.min()) / span * (hi - lo) if span > 0 else (lo + hi) / 2
    return scaled


def _finish(order: np.ndarray, per_rep_distances: np.ndarray, pos_means: np.ndarray, neg_means: np.ndarray,
            n_pos: np.ndarray, labelled: np.ndarray, params: LabelParams) -> LabelResult:
    scaled = np.stack([_scale(d, labelled, params) for d in per_rep_distances])
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    with np.errstate(invalid="ignore"):
        labels = scaled.mean(axis=0)
    return LabelResult(
        labels=labels[inverse],
        mean_pos_sim=pos_means.mean(axis=0)[inverse],
        mean_neg_sim=neg_means.mean(axis=0)[inverse],
        n_pos=n_pos[inverse],
        labelled=labelled[inverse],
        distances=per_rep_distances[:, inverse],
    )


# ----------------------------------------------------------------------------------------
# Reference: one image, one pair at a time (the official script's shape).


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def reference_labels(embeddings: np.ndarray, identities: np.ndarray, params: LabelParams = DEFAULT_PARAMS,
                     progress: ProgressFn | None = None) -> LabelResult:
    """Pseudo-labels computed per image with ``scipy.stats.wasserstein_distance``."""
    from scipy.stats import wasserstein_distance  # the reference's alone (a second to import)

    order, layout, feats = _prepare(np.asarray(embeddings), np.asarray(identities))
    feats = feats.astype(np.float64)
    n = layout.n
    labelled = layout.sizes[layout.identity_of_row] >= 2
    distances = np.full((params.repetitions, n), np.nan)
    pos_means = np.full((params.repetitions, n), np.nan)
    neg_means = np.full((params.repetitions, n), np.nan)
    n_pos = np.zeros(n, dtype=np.int64)
    for rep in range(params.repetitions):
        for block in identity_blocks(layout):
            draws = draw_block(layout, params, rep, block)
            first_row = int(layout.starts[block[0]])
            for local_row in range(len(draws.pos)):
                i = first_row + local_row
                if not labelled[i]:
                    continue
                local_identity = int(layout.identity_of_row[i]) - block[0]
                pos_sims = np.array([_cos(feats[i], feats[j]) for j in draws.positives_of(local_row)])
                neg_sims = np.array([_cos(feats[i], feats[j])
                                     for j in draws.negatives_of(local_row, local_identity)])
                distance = wasserstein_distance(pos_sims, neg_sims)
                if params.sign_guard and pos_sims.mean() < neg_sims.mean():
                    distance = 0.0
                distances[rep, i] = distance
                pos_means[rep, i], neg_means[rep, i] = pos_sims.mean(), neg_sims.mean()
                n_pos[i] = len(pos_sims)
        if progress:
            progress(1)
    return _finish(order, distances, pos_means, neg_means, n_pos, labelled, params)


# ----------------------------------------------------------------------------------------
# Fast: whole blocks of images at once (the pieces are in trainer.label_blocks).


def _torch_device(device: str) -> str | None:
    """``auto``: a CUDA GPU through torch when present, else numpy (None)."""
    if device == "numpy" or (device == "auto" and not os.path.exists("/dev/nvidiactl")):
        return None  # no NVIDIA driver: do not pay torch's import for nothing
    try:
        import torch
    except ImportError:
        if device == "auto":
            return None
        raise
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else None
    return device


class _Distances:
    """The R×N raw distances: kept in memory (caller's row order), or spilled to a temporary file.

    Spilled, they are written in identity-sorted order with ordinary file writes (one
    contiguous run per block and repetition) and read back one repetition at a time for
    scaling: the operating system's page cache holds them, not this process, so resident
    memory stays near the store's.
    """

    def __init__(self, reps: int, n_total: int, order: np.ndarray, spill: bool) -> None:
        self.order, self.n = order, len(order)
        # Closed in close(), called from fast_labels' finally: not a with-block's lifetime.
        self.file = tempfile.TemporaryFile(prefix="facegate-distances-") if spill else None  # noqa: SIM115
        self.array = None if spill else np.full((reps, n_total), np.nan)

    def write(self, rep: int, start: int, values: np.ndarray) -> None:
        """Distances of sorted positions ``start … start + len(values)`` in repetition ``rep``."""
        if self.file is None:
            self.array[rep, self.order[start : start + len(values)]] = values
        else:
            data = np.ascontiguousarray(values, np.float64).tobytes()
            if os.pwrite(self.file.fileno(), data, (rep * self.n + start) * 8) != len(data):
                raise OSError(f"short write to the distances file {self.file.name} (disk full?)")

    def read(self, rep: int) -> np.ndarray:
        """One repetition's distances in sorted order."""
        if self.file is None:
            return self.array[rep, self.order]
        out = np.empty(self.n)
        view, done = memoryview(out).cast("B"), 0
        while done < len(view):  # pread returns at most about 2 GB at a time
            done += os.preadv(self.file.fileno(), [view[done:]], rep * self.n * 8 + done)
        return out

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def fast_labels(embeddings: np.ndarray, identities: np.ndarray, params: LabelParams = DEFAULT_PARAMS,
                workers: int | None = None, progress: ProgressFn | None = None,
                device: str = "auto", usable: np.ndarray | None = None,
                keep_distances: bool = True) -> LabelResult:
    """Pseudo-labels for all images, vectorised per identity block; equals :func:`reference_labels`.

    ``embeddings`` may be a memory-mapped store (float16 or float32): rows are read
    where they lie, a block at a time. Memory beyond the embeddings themselves is a few
    N-vectors plus one block's working set per worker; nothing is held per identity pair
    or for all identities at once. The R×N raw distances (needed to min–max scale each
    repetition) are returned with ``keep_distances``; without it they go to a temporary
    file (:class:`_Distances`) and ``distances`` is None. ``usable``: rows to use (False:
    excluded, e.g. images without a face; no label).

    Blocks run on ``workers`` threads (default: the CPU count); numpy releases the GIL in
    the matrix products, gathers and sorts that dominate. ``device``: ``auto`` runs the
    similarity products on a CUDA GPU through torch when one is present, else numpy;
    ``numpy``, or a torch device name (``cuda``, ``cpu``) to force one.
    """
    order, layout = _layout(embeddings, identities, usable)
    n_total, n_used = len(identities), len(order)
    features = Features(embeddings, order, _torch_device(device))
    reps = params.repetitions
    distances = _Distances(reps, n_total, order, spill=not keep_distances)
    # Per-image outputs in the caller's row order, written block by block.
    pos_sum = np.full(n_total, np.nan)
    neg_sum = np.full(n_total, np.nan)
    n_pos = np.zeros(n_total, dtype=np.int32)  # at most `positives`
    labelled_sorted = layout.sizes[layout.identity_of_row] >= 2
    workers = workers or os.cpu_count() or 1

    def store(result: BlockResult) -> None:
        target = order[result.rows]
        for rep in range(reps):
            distances.write(rep, int(result.rows[0]), result.distances[rep])
        pos_sum[target], neg_sum[target], n_pos[target] = result.pos_sum, result.neg_sum, result.n_pos
        if progress:
            progress(len(result.rows))

    try:
        # One BLAS thread per worker: the workers already use every core. At most two blocks
        # per worker are in flight, so finished blocks never pile up behind a slow one.
        with threadpool_limits(1 if workers > 1 else None, user_api="blas"), ThreadPoolExecutor(workers) as pool:
            in_flight: deque = deque()
            for block in identity_blocks(layout):
                in_flight.append(pool.submit(block_distances, features, layout, params, block))
                if len(in_flight) >= 2 * workers:
                    store(in_flight.popleft().result())
            while in_flight:
                store(in_flight.popleft().result())
        labels_sorted = np.zeros(n_used)
        for rep in range(reps):
            labels_sorted += _scale(distances.read(rep), labelled_sorted, params)
        labels_sorted /= reps
    finally:
        distances.close()
    labels = np.full(n_total, np.nan)
    labels[order] = labels_sorted
    labelled = np.zeros(n_total, dtype=bool)
    labelled[order] = labelled_sorted
    for total in (pos_sum, neg_sum):  # in place: no second copy of an N-vector
        total /= reps
    return LabelResult(labels=labels, mean_pos_sim=pos_sum, mean_neg_sim=neg_sum, n_pos=n_pos, labelled=labelled,
                       distances=distances.array)
