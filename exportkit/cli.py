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
def app(cfg: DictConfig):
    """One export. Returns the export directory (a ``JobFailed`` for a failed job of a sweep)."""
    from exportkit import pipeline
    from exportkit.errors import print_error, show_traceback

    for noisy in ("absl", "tensorflow", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    export = pipeline.Export(pipeline.resolved(cfg), overrides=job_overrides())
    if in_multirun():
        return _sweep_job(export)
    try:
        return str(export.run().export_dir)
    except Exception as error:  # noqa: BLE001 - a user's mistake is one line; a bug re-raised
        if show_traceback(error):
            raise
        print_error(error)
        sys.exit(1)


def _sweep_job(export):
    """One job of a sweep: a failure is returned, not raised, so the sweep goes on to the other
    jobs and ``exportkit.sweep_summary.SweepSummary`` reports it (and exits non-zero at the end).

    A user's mistake prints one line, as in a single run; any other exception is a bug and
    prints its traceback (as does every failure with ``HYDRA_FULL_ERROR=1``).
    """
    import traceback

    from exportkit.errors import ExportkitError, print_error, show_traceback
    from exportkit.sweep_summary import JobFailed

    try:
        return str(export.run().export_dir)
    except Exception as error:  # noqa: BLE001 - isolating one job of a sweep from the others
        if show_traceback(error):
            traceback.print_exc()
        print_error(error)
        return JobFailed.from_error(error, isinstance(error, ExportkitError), export.records)


def job_overrides():
    """The command line's overrides of this job (recorded in the manifest)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("inspect", "verify"):  # subcommands for existing exports
        from exportkit import commands

        sys.exit(commands.main(sys.argv[1:]))
    app()
