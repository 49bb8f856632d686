"""Every comparison a held-out set allows: all pairs of distinct images, mated and non-mated.

Pairs are listed in the order of ``np.triu_indices`` (as the first evaluation did), so
tie-breaking draws and therefore the curves are the same as before. Each pair also carries
its *block*: the identity of a mated pair, the unordered identity pair ``a·n + b`` (a < b) of a
non-mated one. Resampling identities (the bootstrap) weights every pair through its block.
Similarities come from one Gram matrix per recogniser (N² floats) instead of gathering two
embeddings per pair (5.8 M pairs × 2 × 128 floats on pins/heldout).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Pairs:
    """Index arrays of the mated and non-mated pairs of one held-out set."""

    identity_index: np.ndarray  # per image: 0 … n_identities-1
    n_identities: int
    mated: np.ndarray  # M×2 image indices
    nonmated: np.ndarray  # K×2 image indices
    mated_block: np.ndarray  # M identity indices
    nonmated_block: np.ndarray  # K blocks a·n + b, a < b

    @property
    def n_nonmated_blocks(self) -> int:
        return self.n_identities * self.n_identities

    def similarities(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cosine similarity of every mated and non-mated pair (unit-length embeddings)."""
        gram = embeddings.astype(np.float32) @ embeddings.astype(np.float32).T
        return gram[self.mated[:, 0], self.mated[:, 1]], gram[self.nonmated[:, 0], self.nonmated[:, 1]]

    def pair_quality(self, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A pair's quality is the lower of its two images' (missing values rank lowest)."""
        q = np.where(np.isnan(quality), -np.inf, quality).astype(np.float64)
        return (np.minimum(q[self.mated[:, 0]], q[self.mated[:, 1]]),
                np.minimum(q[self.nonmated[:, 0]], q[self.nonmated[:, 1]]))


def all_pairs(identities: np.ndarray) -> Pairs:
    """Every unordered pair of distinct images of ``identities`` (one name per image)."""
    names, index = np.unique(identities, return_inverse=True)
    index = index.astype(np.int32)
    upper = np.triu_indices(len(identities), 1)
    first, second = upper[0].astype(np.int32), upper[1].astype(np.int32)
    del upper
    a, b = index[first], index[second]
    same = a == b
    mated = np.stack([first[same], second[same]], axis=1)
    nonmated = np.stack([first[~same], second[~same]], axis=1)
    low, high = np.minimum(a[~same], b[~same]), np.maximum(a[~same], b[~same])
    return Pairs(index, len(names), mated, nonmated, a[same].astype(np.int32),
                 (low * len(names) + high).astype(np.int32))
