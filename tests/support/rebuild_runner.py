"""Run ``trainer.rebuild.rebuild`` from a JSON description (tests run it as a process they can kill).

The rebuild CLI writes into the repository's ``engines/models/``; tests give a models
folder of their own and evaluate with SFace only, which the CLI does not offer.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from trainer.datasets.degraded import DegradeOptions
from trainer.fit_options import FitOptions
from trainer.rebuild import rebuild
from trainer.rebuild_stages import EmbeddingOptions
from trainer.sddfiqa import RegressorParams


def main(config_path: str) -> int:
    config = json.loads(Path(config_path).read_text())
    result = rebuild([Path(r) for r in config["roots"]], Path(config["heldout"]),
                     fit_params=replace(RegressorParams(), **config.get("fit_params", {})),
                     models_dir=Path(config["models_dir"]), recognizers=tuple(config["recognizers"]),
                     fit_options=FitOptions(**config.get("fit_options", {})),
                     embedding=EmbeddingOptions(**config.get("embedding", {})), progress=config.get("progress", True),
                     degrade=DegradeOptions(**config.get("degrade", {})))
    print(json.dumps({"model": str(result.version_dir), "current": result.became_current,
                      "summary": str(result.summary)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
