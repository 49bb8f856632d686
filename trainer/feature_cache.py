"""Features of the frozen backbone blocks, computed once per image and orientation.

When the first K blocks of the backbone are frozen, their output for an image never
changes during training, so it is computed once and read back every epoch. The reference
recipe mirrors images at random; a mirrored image's features are not the mirrored
features (the convolutions are not symmetric), so both orientations are stored and a
training step picks one per sample.

The store is a folder per (backbone initialisation, cut): ``<recogniser>-<sha12>-cut<K>``.
Inside, shards of float16 features, ``<shard>.npy`` of shape (n, 2, C, H, W), each
committed by its ``<shard>.keys`` file (the sha256 of each image's bytes, one a line),
written after the array and renamed into place. A shard without its keys file is not
part of the store, so a kill at any point loses at most the shards being written, and a
re-run computes only what is missing. Several processes (``torchrun``) build disjoint
shards at the same time; the arrays are read back memory-mapped.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
import shutil
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engines.errors import FacegateError
from trainer.checkpoints import write_atomically, write_json_atomically
from trainer.distributed import World, barrier, cpu_threads_per_process
from trainer.fit_data import LabelledImages
from trainer.quality_model import BLOCKS, QualityRegressor, crops_to_tensor, cut_shape

log = logging.getLogger(__name__)

STORE_FORMAT = 1
ORIENTATIONS = 2  # 0: the image as stored, 1: mirrored left-right


class FeatureStore:
    """Cached features at one cut of one backbone initialisation, found by image content."""

    def __init__(self, root: Path, init_id: str, frozen_blocks: int) -> None:
        self.frozen_blocks = frozen_blocks
        self.shape = cut_shape(frozen_blocks)
        self.folder = Path(root) / f"{init_id}-cut{frozen_blocks}"
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = self.folder / "store.json"
        if not meta.is_file():
            write_json_atomically({"format": STORE_FORMAT, "init": init_id, "frozen_blocks": frozen_blocks,
                                   "shape": list(self.shape), "dtype": "float16",
                                   "orientations": ["as stored", "mirrored"]}, meta)
        self.shards: list[str] = []
        self.location: dict[str, tuple[int, int]] = {}
        self._arrays: dict[int, np.ndarray] = {}
        self._remove_stale_temporaries()
        self.refresh()

    def _remove_stale_temporaries(self, older_than_s: float = 3600.0) -> None:
        """Delete what killed builds left half-written (a shard is written in seconds, not an hour;
        younger files may belong to a build running now, on this machine or another)."""
        now = time.time()
        for stale in self.folder.glob("*.tmp-*"):
            with contextlib.suppress(OSError):
                if now - stale.stat().st_mtime > older_than_s:
                    stale.unlink()

    @property
    def bytes_per_image(self) -> int:
        return ORIENTATIONS * int(np.prod(self.shape)) * 2

    def refresh(self) -> None:
        """Re-read the committed shards (others may have been written since)."""
        shards, location = [], {}
        for keys_file in sorted(self.folder.glob("*.keys")):
            array_file = keys_file.with_suffix(".npy")
            keys = keys_file.read_text().split()
            try:
                rows = np.load(array_file, mmap_mode="r").shape[0]
            except (OSError, ValueError):
                rows = -1
            if rows != len(keys):
                log.warning("feature shard %s is damaged (%s rows for %s keys): ignored", array_file, rows, len(keys))
                continue
            for row, key in enumerate(keys):
                location.setdefault(key, (len(shards), row))
            shards.append(array_file.name)
        self.shards, self.location = shards, location
        self._arrays = {}

    def missing(self, content_keys: list[str]) -> list[str]:
        """Distinct keys among ``content_keys`` with no committed features, in first-seen order."""
        return list(dict.fromkeys(k for k in content_keys if k not in self.location))

    def write_shard(self, keys: list[str], features: np.ndarray) -> Path:
        """Commit features (n, 2, C, H, W) of ``keys``: the array first, then its keys file."""
        if features.shape != (len(keys), ORIENTATIONS, *self.shape):
            raise FacegateError(f"features of shape {features.shape} do not fit the store's {self.shape}")
        name = hashlib.sha256("".join(keys).encode()).hexdigest()[:20]
        target = self.folder / f"{name}.npy"
        array = np.ascontiguousarray(features, dtype=np.float16)
        write_atomically(target, lambda handle: np.save(handle, array, allow_pickle=False))
        write_atomically(target.with_suffix(".keys"), lambda handle: handle.write(("\n".join(keys) + "\n").encode()))
        return target

    def array(self, shard: int) -> np.ndarray:
        """Shard ``shard``, memory-mapped (opened once per process)."""
        if shard not in self._arrays:
            self._arrays[shard] = np.load(self.folder / self.shards[shard], mmap_mode="r")
        return self._arrays[shard]

    def rows(self, content_keys: list[str]) -> StoreRows:
        """Reader of the features of ``content_keys`` (all must be committed)."""
        missing = self.missing(content_keys)
        if missing:
            raise FacegateError(f"{len(missing)} images have no cached features in {self.folder}")
        return StoreRows(self, [self.location[k] for k in content_keys])

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_arrays"] = {}  # memory maps are reopened in each worker process, never copied
        return state


class StoreRows:
    """The features of a list of images, by position: what ``CachedSamples`` reads."""

    def __init__(self, store: FeatureStore, locations: list[tuple[int, int]]) -> None:
        self.store = store
        self.locations = locations

    def __len__(self) -> int:
        return len(self.locations)

    def get(self, index: int, orientation: int) -> np.ndarray:
        shard, row = self.locations[index]
        return self.store.array(shard)[row, orientation]


class FrontRunner:
    """The frozen blocks as an inference model: crops → features at the cut, both orientations.

    On a CPU the blocks run in ONNX Runtime (BatchNorm folded into the convolutions, PReLU
    rewritten as the engines do, all of this process's cores): about twice torch's speed.
    On a GPU they run in torch.
    """

    def __init__(self, model: QualityRegressor, frozen_blocks: int, world: World) -> None:
        self.frozen_blocks = frozen_blocks
        self.device = world.device
        front = _frozen_front(model, frozen_blocks)
        if self.device.type == "cpu":
            self.session = _ort_session(front, cpu_threads_per_process(world))
            self.module = None
        else:
            self.session = None
            self.module = front.to(self.device)

    def __call__(self, crops_bgr: np.ndarray) -> np.ndarray:
        """(n, 112, 112, 3) BGR uint8 → (n, 2, C, H, W) float32: as stored, then mirrored."""
        both = np.concatenate([crops_bgr, crops_bgr[:, :, ::-1]])
        x = crops_to_tensor(both)
        if self.session is not None:
            out = self.session.run(None, {"input": x.numpy()})[0]
        else:
            with torch.no_grad():
                out = self.module(x.to(self.device)).float().cpu().numpy()
        n = len(crops_bgr)
        return np.stack([out[:n], out[n:]], axis=1)


def _frozen_front(model: QualityRegressor, frozen_blocks: int) -> torch.nn.Module:
    """Eval-mode copy of the frozen blocks, each Conv+BN folded into one Conv."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    blocks = copy.deepcopy(model.backbone.body[:frozen_blocks]).eval()
    for layer in blocks:
        layer[0] = fuse_conv_bn_eval(layer[0], layer[1])
        layer[1] = torch.nn.Identity()
    if frozen_blocks == BLOCKS:
        return torch.nn.Sequential(*blocks, copy.deepcopy(model.backbone.bn).eval())
    return blocks


def _ort_session(front: torch.nn.Module, threads: int):
    import onnx
    import onnxruntime as ort

    from engines.convert import prelu_as_affine_relu

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(front, (torch.zeros(1, 3, 112, 112),), buffer, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["features"], do_constant_folding=True,
                          dynamic_axes={"input": {0: "batch"}, "features": {0: "batch"}})
    graph, _ = prelu_as_affine_relu(onnx.load_from_string(buffer.getvalue()))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    # Idle threads sleep instead of spinning: on a quiet machine it costs little (-5%), on a
    # shared one spinning threads burned a third of the CPU for nothing (measured).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(graph.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])


@dataclass
class CacheReport:
    """What a cache build did (recorded in fit.json and the rebuild summary)."""

    images: int
    computed: int
    reused: int
    seconds: float
    store: str
    bytes_on_disk: int

    @property
    def images_per_s(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else 0.0


def content_keys(images: LabelledImages, progress: bool, threads: int = 4) -> list[str]:
    """sha256 of every image's bytes (threads: hashing releases the GIL)."""
    from tqdm import tqdm

    with ThreadPoolExecutor(threads) as pool:
        return list(tqdm(pool.map(images.content_key, range(len(images)), chunksize=64), total=len(images),
                         desc="image hashes", unit="img", disable=not progress, leave=False))


def _decoded_batches(images: LabelledImages, positions: list[int], batch: int) -> Iterator[np.ndarray]:
    """Decoded crops in batches, the next batch decoding on a thread while this one computes."""
    chunks = [positions[i : i + batch] for i in range(0, len(positions), batch)]
    with ThreadPoolExecutor(2) as pool:
        pending = pool.submit(lambda c: np.stack([images.read(j) for j in c]), chunks[0]) if chunks else None
        for k in range(len(chunks)):
            crops = pending.result()
            if k + 1 < len(chunks):
                pending = pool.submit(lambda c: np.stack([images.read(j) for j in c]), chunks[k + 1])
            yield crops


def build_cache(images: LabelledImages, keys: list[str], store: FeatureStore, runner: FrontRunner, world: World,
                batch_size: int = 64, shard_images: int = 2048, progress: bool = True) -> CacheReport:
    """Compute and commit the features of every image of ``images`` not yet in ``store``.

    The missing images are split into shards of ``shard_images``; process ``r`` of ``n``
    computes shards ``r, r + n, …``. Afterwards every process checks the store again and
    computes what is still missing itself (the store may be on a disk the other processes
    do not share).
    """
    from tqdm import tqdm

    started = time.perf_counter()
    first_position = {}
    for position, key in enumerate(keys):
        first_position.setdefault(key, position)
    store.refresh()
    missing = store.missing(keys)
    # Every process lists what is missing before any of them writes: a process that got here late
    # would otherwise list fewer images, and the shards it takes would not be the ones left to it.
    barrier(world)
    reused = len(first_position) - len(missing)
    needed = len(missing) * store.bytes_per_image
    free = shutil.disk_usage(store.folder).free
    if needed > free:
        raise FacegateError(f"the feature cache needs {needed / 2**30:.1f} GiB for {len(missing)} images at cut "
                            f"{store.frozen_blocks} but {store.folder} has {free / 2**30:.1f} GiB free")
    computed = 0
    for attempt in ("shared", "local"):
        shards = [missing[i : i + shard_images] for i in range(0, len(missing), shard_images)]
        mine = shards[world.rank :: world.size] if attempt == "shared" else shards
        todo = sum(len(s) for s in mine)
        with tqdm(total=todo, desc=f"features at cut {store.frozen_blocks}", unit="img", disable=not progress,
                  smoothing=0.1) as bar:
            for shard_keys in mine:
                parts = []
                for crops in _decoded_batches(images, [first_position[k] for k in shard_keys], batch_size):
                    parts.append(runner(crops))
                    bar.update(len(crops))
                store.write_shard(shard_keys, np.concatenate(parts))
                computed += len(shard_keys)
        barrier(world)
        store.refresh()
        missing = store.missing(keys)
        if not missing:
            break
        log.info("rank %s: %s images still have no features (store not shared?): computing them here",
                 world.rank, len(missing))
    size = sum((store.folder / s).stat().st_size for s in store.shards)
    return CacheReport(len(keys), computed, reused, round(time.perf_counter() - started, 2),
                       str(store.folder), size)
