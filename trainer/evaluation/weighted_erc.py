"""Error-versus-reject curves on millions of pairs, with pair weights, fast enough to bootstrap.

Computes exactly what :func:`trainer.erc.erc_curve` computes (the reference; tests hold the
two equal), generalised to integer pair weights: a pair of weight w counts as w copies of
itself, which is what resampling identities with replacement does to the pairs (see
:mod:`trainer.evaluation.bootstrap`). With every weight 1 it is the plain ERC.

What makes a replicate cheap (pins/heldout has 5.8 M non-mated pairs):

- each method's quality order of the pairs is sorted once, and never again: discarding the
  lowest fraction u of the (weighted) pairs is a cut in that order, found from per-block
  counts at checkpoints every ``STRIDE`` pairs and a short cumulative sum inside one stretch;
- the FMR threshold is read by walking the non-mated pairs in decreasing similarity (sorted
  once per recogniser) and summing the weights of those the cut keeps, only as deep as
  needed (a few times FMR × pairs, doubled whenever a replicate needs more);
- FNMR is one dot product over the kept mated pairs per discard fraction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from trainer.erc import DISCARD

STRIDE = 4096


@dataclass
class Cuts:
    """Where the discard fractions cut one side's quality order under some weights.

    Pairs before ``position`` are dropped, the pair at ``position`` keeps ``partial`` of its
    weight (a cut can fall between copies of one pair), pairs after it are kept whole.
    """

    position: np.ndarray  # per discard fraction
    partial: np.ndarray
    kept: np.ndarray  # total weight kept


class QualityOrder:
    """One side (mated or non-mated pairs) sorted once by one method's pair quality."""

    def __init__(self, pair_quality: np.ndarray, tie: np.ndarray, blocks: np.ndarray, n_blocks: int) -> None:
        # The order of np.lexsort((tie, pair_quality)), from one int64 key (several times faster):
        # equal qualities share a dense rank, and ``tie`` is a permutation, so every key is distinct.
        dense = np.unique(pair_quality, return_inverse=True)[1].astype(np.int64)
        order = np.argsort(dense * len(tie) + tie)
        self.size = len(order)
        self.rank = np.empty(self.size, np.int32)
        self.rank[order] = np.arange(self.size, dtype=np.int32)
        dtype = np.int16 if n_blocks < 2**15 else np.int32
        self.block = blocks[order].astype(dtype)
        self.n_blocks = n_blocks
        chunks = -(-self.size // STRIDE)
        counts = np.bincount(np.arange(self.size) // STRIDE * n_blocks + self.block,
                             minlength=chunks * n_blocks).reshape(chunks, n_blocks)
        self.checkpoints = np.zeros((chunks + 1, n_blocks), np.float64)  # float: multiplied by weights
        np.cumsum(counts, axis=0, out=self.checkpoints[1:])
        self._order = order.astype(np.int32)

    def sorted_values(self, values: np.ndarray) -> np.ndarray:
        """``values`` (one per pair) in this quality order."""
        return values[self._order]

    def cuts(self, block_weight: np.ndarray, discard: np.ndarray = DISCARD) -> Cuts:
        """Cuts for each discard fraction: round(u · total weight) units dropped, lowest quality first."""
        at_checkpoint = self.checkpoints @ block_weight  # weight before each checkpoint
        total = at_checkpoint[-1]
        units = np.round(discard * total)
        position = np.empty(len(discard), np.int64)
        partial = np.empty(len(discard), np.float64)
        for n, drop in enumerate(units):
            stretch = min(int(np.searchsorted(at_checkpoint, drop, side="right")) - 1, len(at_checkpoint) - 2)
            start = stretch * STRIDE
            running = at_checkpoint[stretch] + np.cumsum(block_weight[self.block[start : start + STRIDE]])
            inside = int(np.searchsorted(running, drop, side="right"))
            if inside >= len(running):  # everything dropped (only when the total weight is 0)
                position[n], partial[n] = self.size, 0.0
                continue
            position[n] = start + inside
            partial[n] = running[inside] - drop
        return Cuts(position, partial, total - units)


@dataclass
class NonmatedTail:
    """One recogniser's non-mated pairs in decreasing similarity: where thresholds are read."""

    similarity: np.ndarray  # sorted, decreasing
    order: np.ndarray  # pair index of each
    block: np.ndarray
    _ranks: dict = field(default_factory=dict)  # method → its quality ranks along ``order`` (a prefix)

    @classmethod
    def of(cls, nonmated_similarity: np.ndarray, nonmated_block: np.ndarray) -> NonmatedTail:
        order = np.argsort(-nonmated_similarity, kind="stable").astype(np.int32)
        return cls(nonmated_similarity[order], order, nonmated_block[order])

    def ranks(self, method: str, quality: QualityOrder, depth: int) -> np.ndarray:
        have = self._ranks.get(method)
        if have is None or len(have) < depth:
            grown = max(depth, 2 * len(have) if have is not None else 0)  # grow geometrically
            self._ranks[method] = have = quality.rank[self.order[:grown]]
        return have[:depth]

    def thresholds(self, method: str, quality: QualityOrder, cuts: Cuts, block_weight: np.ndarray,
                   fmr: float, depth_hint: int = 0) -> tuple[np.ndarray, int]:
        """Similarity threshold per discard fraction (accept above it); and the depth that was needed."""
        size = len(self.similarity)
        result = np.full(len(cuts.position), -np.inf, self.similarity.dtype)  # same dtype: no conversions
        needed = 0
        depth = min(size, max(depth_hint, int(4 * fmr * size) + 1024))
        for n, (position, partial, kept) in enumerate(zip(cuts.position, cuts.partial, cuts.kept, strict=True)):
            allowed = np.floor(fmr * kept)
            while True:
                ranks = self.ranks(method, quality, depth)
                weight = np.where(ranks > position, block_weight[self.block[:depth]], 0.0)
                weight[ranks == position] = partial
                found = int(np.searchsorted(np.cumsum(weight), allowed, side="right"))
                if found < depth:
                    result[n] = self.similarity[found]
                    needed = max(needed, found + 1)
                    break
                if depth >= size:
                    break  # every kept pair is accepted: threshold −inf
                depth = min(size, depth * 2)
        return result, needed


class MatedSimilarity:
    """One recogniser's mated pairs in increasing similarity, with per-identity counts at checkpoints:
    the weight of all mated pairs at or below a threshold in O(STRIDE)."""

    def __init__(self, similarity: np.ndarray, identity: np.ndarray, n_identities: int) -> None:
        order = np.argsort(similarity, kind="stable")
        self.similarity = similarity[order]
        self.identity = identity[order].astype(np.int16 if n_identities < 2**15 else np.int32)
        self.n_identities = n_identities
        chunks = -(-len(order) // STRIDE)
        counts = np.bincount(np.arange(len(order)) // STRIDE * n_identities + self.identity,
                             minlength=chunks * n_identities).reshape(chunks, n_identities)
        self.checkpoints = np.zeros((chunks + 1, n_identities), np.float64)
        np.cumsum(counts, axis=0, out=self.checkpoints[1:])

    def weight_at_or_below(self, threshold: float, identity_weight: np.ndarray) -> float:
        # the threshold in the array's own dtype, or searchsorted converts the whole array each call
        end = int(np.searchsorted(self.similarity, self.similarity.dtype.type(threshold), side="right"))
        stretch = end // STRIDE
        counts = self.checkpoints[stretch] + np.bincount(self.identity[stretch * STRIDE : end],
                                                         minlength=self.n_identities)
        return float(counts @ identity_weight)


def fnmr(mated: MatedSimilarity, similarity_sorted: np.ndarray, identity_sorted: np.ndarray,
         identity_weight: np.ndarray, cuts: Cuts, thresholds: np.ndarray) -> np.ndarray:
    """Weighted FNMR of the kept mated pairs at each threshold.

    ``similarity_sorted``/``identity_sorted``: the mated pairs in the method's quality order.
    Rejected weight = (all pairs at or below the threshold) − (the dropped ones), summing over
    whichever of the dropped prefix or the kept suffix is shorter.
    """
    out = np.full(len(thresholds), np.nan)
    n = mated.n_identities
    for k, (position, partial, kept, threshold) in enumerate(
            zip(cuts.position, cuts.partial, cuts.kept, thresholds, strict=True)):
        if kept <= 0 or position >= len(similarity_sorted):
            continue
        at_cut = float(similarity_sorted[position] <= threshold)
        if position < len(similarity_sorted) // 2:
            head = similarity_sorted[:position] <= threshold
            dropped = np.bincount(identity_sorted[:position][head], minlength=n) @ identity_weight
            dropped += (identity_weight[identity_sorted[position]] - partial) * at_cut
            rejected = mated.weight_at_or_below(threshold, identity_weight) - dropped
        else:
            tail = similarity_sorted[position + 1 :] <= threshold
            rejected = np.bincount(identity_sorted[position + 1 :][tail], minlength=n) @ identity_weight
            rejected += partial * at_cut
        out[k] = rejected / kept
    return out


class ErcSet:
    """Every method's ERC on one held-out set's pairs, for every recogniser, under any identity weights.

    Built once per set (similarities sorted per recogniser); each method added once (its pairs
    sorted by quality); then :meth:`curves` is cheap for any identity multiplicities.
    """

    def __init__(self, pairs, similarities: dict[str, tuple[np.ndarray, np.ndarray]], seed: int = 0) -> None:
        rng = np.random.default_rng(seed)  # tie-breaking draws, as trainer.erc.erc_curve makes them
        self.pairs = pairs
        self.tie_mated = rng.permutation(len(pairs.mated))
        self.tie_nonmated = rng.permutation(len(pairs.nonmated))
        self.mated_similarity = {name: sims[0] for name, sims in similarities.items()}
        self.mated = {name: MatedSimilarity(sims[0], pairs.mated_block, pairs.n_identities)
                      for name, sims in similarities.items()}
        self.tails = {name: NonmatedTail.of(sims[1], pairs.nonmated_block) for name, sims in similarities.items()}
        self.orders: dict[str, tuple[QualityOrder, QualityOrder]] = {}
        self._mated_sorted: dict[tuple[str, str], np.ndarray] = {}
        self.depth: dict[tuple[str, str, float], int] = {}

    @property
    def recognizers(self) -> list[str]:
        return list(self.tails)

    def add_method(self, name: str, image_quality: np.ndarray) -> None:
        """Sort the pairs by this method's pair quality (the lower of the two images' scores)."""
        mated_quality, nonmated_quality = self.pairs.pair_quality(image_quality)
        mated = QualityOrder(mated_quality, self.tie_mated, self.pairs.mated_block, self.pairs.n_identities)
        nonmated = QualityOrder(nonmated_quality, self.tie_nonmated, self.pairs.nonmated_block,
                                self.pairs.n_nonmated_blocks)
        self.orders[name] = (mated, nonmated)
        for recognizer, similarity in self.mated_similarity.items():
            self._mated_sorted[(recognizer, name)] = mated.sorted_values(similarity)

    def drop_method(self, name: str) -> None:
        """Free a method's sorted orders (an experiment loop adds and drops candidates)."""
        self.orders.pop(name, None)
        for key in [k for k in self._mated_sorted if k[1] == name]:
            del self._mated_sorted[key]
        for tail in self.tails.values():
            tail._ranks.pop(name, None)

    def weights(self, multiplicity: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Per-identity (mated) and per-block (non-mated) weights for identity multiplicities."""
        n = self.pairs.n_identities
        m = np.ones(n) if multiplicity is None else np.asarray(multiplicity, np.float64)
        return m, np.outer(m, m).reshape(-1)

    def curves(self, method: str, fmrs: tuple[float, ...], multiplicity: np.ndarray | None = None,
               discard: np.ndarray = DISCARD) -> dict[str, dict[float, np.ndarray]]:
        """FNMR at each discard fraction, per recogniser and FMR (``multiplicity``: copies of each identity)."""
        mated_order, nonmated_order = self.orders[method]
        identity_weight, block_weight = self.weights(multiplicity)
        mated_cuts = mated_order.cuts(identity_weight, discard)
        nonmated_cuts = nonmated_order.cuts(block_weight, discard)
        out: dict[str, dict[float, np.ndarray]] = {}
        for recognizer, tail in self.tails.items():
            out[recognizer] = {}
            for fmr in fmrs:
                key = (recognizer, method, fmr)
                thresholds, needed = tail.thresholds(method, nonmated_order, nonmated_cuts, block_weight, fmr,
                                                     self.depth.get(key, 0))
                if multiplicity is None:
                    self.depth[key] = 2 * needed + 1024  # replicates start from twice the plain depth
                out[recognizer][fmr] = fnmr(self.mated[recognizer], self._mated_sorted[(recognizer, method)],
                                            mated_order.block, identity_weight, mated_cuts, thresholds)
        return out
