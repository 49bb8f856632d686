"""dlib's recogniser over worker processes gives what one process gives, in order."""

from __future__ import annotations

import numpy as np

from engines.imageio import read_image
from trainer.evaluation.methods import embeddings_of_crops
from trainer.evaluation.parallel import RecognizerPool
from trainer.recognizers import recognizer


def test_process_pool_embeds_like_one_process_and_the_cache_keeps_order(seed_set, tmp_path):
    paths = sorted((seed_set / "heldout").rglob("*.png"))[:7]  # odd: the split over two workers is uneven
    crops = np.stack([read_image(p) for p in paths])
    expected = recognizer("dlib-resnet").embed(crops)
    with RecognizerPool("dlib-resnet", 2) as pool:
        np.testing.assert_allclose(pool.embed(crops), expected, atol=1e-6)
        np.testing.assert_allclose(pool.embed(crops[::-1]), expected[::-1], atol=1e-6)
    keys = [f"k{i}" for i in range(len(crops))]
    cached = embeddings_of_crops(crops, keys, "dlib-resnet", tmp_path, progress=False)  # a process per core
    np.testing.assert_allclose(cached, expected, atol=1e-6)
