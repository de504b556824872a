"""The Hydra app behind ``python -m exportkit`` and the ``exportkit`` console script.

Only Hydra and the schema are imported here: ``--help`` and ``--cfg job`` never load TensorFlow.
"""
import logging
import os
import sys

import hydra
from omegaconf import DictConfig

from exportkit import schema

schema.register()
# TensorFlow's C++ start-up chatter (CPU features, missing CUDA) is not the user's business.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@hydra.main(config_path="pkg://exportkit.conf", config_name="config", version_base="1.3")
def app(cfg: DictConfig) -> str:
    from exportkit import pipeline
    from exportkit.errors import ExportkitError

    for noisy in ("absl", "tensorflow", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        result = pipeline.run(pipeline.resolved(cfg))
    except ExportkitError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"exportkit: error: {error}", file=sys.stderr)
        sys.exit(1)
    return str(result.export_dir)


def main() -> None:
    app()
