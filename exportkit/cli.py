"""The Hydra app behind ``python -m exportkit`` and the ``exportkit`` console script.

Only Hydra and the schema are imported here: ``--help`` and ``--cfg job`` never load TensorFlow.

What the user sees of a mistake is one line, ``exportkit: error: ...``, whether exportkit or
Hydra found it: ``main`` asks Hydra to raise its composition errors (unknown key, wrong type,
unknown group option, override syntax) instead of printing its own report, and prints them as
one line with the key named (``exportkit.composition.composition_error``). TensorFlow's and
absl's start-up logs are kept off the terminal unless ``EXPORTKIT_VERBOSE=1`` or
``HYDRA_FULL_ERROR=1`` (which also shows tracebacks).
"""

import os
import sys

import hydra
from omegaconf import DictConfig

from exportkit import schema

schema.register()

# Exceptions app() re-raised as bugs: main() must not turn them into a user's one line.
_BUGS = set()
# The verification process every job of a sweep run in this process shares (started by the first
# job that verifies, ended at exit; see sweep_verifier). A module-level holder because Hydra's
# launcher calls app() once per job with nothing that lives across the jobs but this process.
_SWEEP_VERIFIER = []


@hydra.main(config_path="pkg://exportkit.conf", config_name="config", version_base="1.3")
def app(cfg: DictConfig):
    """One export. Returns the export directory (a ``JobFailed`` for a failed job of a sweep)."""
    from exportkit import pipeline, signatures
    from exportkit.errors import ExportkitError, print_error, show_traceback
    from exportkit.frameworks import import_tensorflow

    if in_multirun():
        cfg = pipeline.resolved(cfg)
        export = pipeline.Export(cfg, overrides=job_overrides(), verifier=sweep_verifier(cfg))
        export.start_verifier()  # its TensorFlow import beside this process's own (the first job's)
        import_tensorflow()
        return _sweep_job(export)
    export = pipeline.Export(pipeline.resolved(cfg), overrides=job_overrides())
    try:
        # a config mistake is told before TensorFlow is imported (about 5 s)
        schema.validate(export.cfg)
        signatures.parse(export.cfg.signatures)
        export.start_verifier()  # the verify process imports TensorFlow beside this one
        import_tensorflow()
        return str(export.run().export_dir)
    except Exception as error:  # noqa: BLE001 - a user's mistake is one line; a bug re-raised
        if show_traceback(error):
            if not isinstance(error, ExportkitError):
                _BUGS.add(id(error))
            raise
        print_error(error)
        sys.exit(1)
    finally:
        export.close()


def sweep_verifier(cfg: DictConfig):
    """The verifier shared by this process's sweep jobs (None with ``verify.early_start=false``:
    each job's verify stage then starts its own). Each job still loads its export afresh from disk."""
    from exportkit.verification.process import Verifier

    if not cfg.verify.get("early_start", True):
        return None
    if not _SWEEP_VERIFIER:
        import atexit

        _SWEEP_VERIFIER.append(Verifier())
        atexit.register(_SWEEP_VERIFIER[0].close)
    return _SWEEP_VERIFIER[0]


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


def list_groups_once() -> None:
    """For ``--help``: Hydra (1.3) lists the config groups by asking its config loader for each
    group's options, about 70 times, and each answer deep-copies the whole config repository (0.3
    of the 0.6 s ``--help`` took). Nothing changes the repository while the help is printed, so
    one copy answers every question (same config name and overrides). Left alone if this Hydra's
    loader is not the one this was written for."""
    try:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra.core.object_type import ObjectType
    except ImportError:
        return
    create = getattr(ConfigLoaderImpl, "_parse_overrides_and_create_caching_repo", None)
    if create is None or not hasattr(ConfigLoaderImpl, "get_group_options"):
        return
    repositories = {}

    def get_group_options(self, group_name, results_filter=ObjectType.CONFIG, config_name=None, overrides=None):
        key = (id(self), config_name, tuple(overrides or ()))
        if key not in repositories:
            repositories[key] = create(self, config_name, list(overrides or []))[1]
        return repositories[key].get_group_options(group_name, results_filter)

    ConfigLoaderImpl.get_group_options = get_group_options


def mode_without_composing(argv) -> bool:
    """For a run: Hydra (1.3) composes the whole config once only to read ``hydra.mode``
    (``Hydra.get_mode``), then again to run (0.07 s each). exportkit's shipped configs never set
    ``hydra.mode`` (``tests/test_startup.py`` checks), so when the command line brings in no other
    config (no ``hydra`` override or group, no other config directory or name, no group option
    but the shipped ones) the answer is known without composing: none, and Hydra follows ``-m``."""
    from importlib import resources

    conf = resources.files("exportkit.conf")
    shipped = {
        group.name: {f.name[:-5] for f in group.iterdir() if f.name.endswith(".yaml")}
        for group in conf.iterdir()
        if group.is_dir() and group.name != "hydra"
    }
    for arg in argv:
        if arg.startswith("-"):
            if arg not in ("-m", "--multirun"):
                return False  # another config directory or name, --cfg, --info, ...
            continue
        key, _, value = arg.lstrip("+~").partition("=")
        if key.startswith("hydra"):
            return False
        if key in shipped and not set(value.split(",")) <= shipped[key]:
            return False  # a group option from elsewhere (a sweep's comma list: each of them)
    return True


def skip_mode_composition() -> None:
    """Answer ``Hydra.get_mode`` without composing when ``mode_without_composing`` says it may;
    left alone if this Hydra has no such method."""
    try:
        from hydra._internal.hydra import Hydra
    except ImportError:
        return
    if hasattr(Hydra, "get_mode") and mode_without_composing(sys.argv[1:]):
        Hydra.get_mode = lambda self, config_name, overrides: None


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("inspect", "verify"):  # subcommands for existing exports
        from exportkit import commands

        sys.exit(commands.main(sys.argv[1:]))
    from exportkit.composition import composition_error
    from exportkit.errors import ExportkitError, full_error_wanted, print_error
    from exportkit.frameworks import quiet_frameworks

    # Hydra prints its own several-line report for a composition error and exits, unless
    # HYDRA_FULL_ERROR=1: then it raises, and the error is told here as one line. The user's
    # own HYDRA_FULL_ERROR (tracebacks wanted) is kept in EXPORTKIT_FULL_ERROR.
    os.environ["EXPORTKIT_FULL_ERROR"] = "1" if full_error_wanted() else "0"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    quiet_frameworks()
    if any(arg in ("--help", "-h", "--hydra-help") for arg in sys.argv[1:]):
        list_groups_once()
    skip_mode_composition()
    try:
        app()
    except Exception as error:  # noqa: BLE001 - Hydra's errors become one line; a bug re-raised
        if id(error) in _BUGS or full_error_wanted():
            raise
        told = error if isinstance(error, ExportkitError) else composition_error(error)
        if told is None:
            raise
        print_error(told)
        sys.exit(1)


def console() -> None:
    """``python -m exportkit`` and the ``exportkit`` console script: ``main``, then the process
    ends at once with its exit status, after the ``atexit`` handlers (Hydra's logging, a sweep's
    verifier) and with stdout and stderr flushed. A process that imported TensorFlow otherwise
    spends about a second tearing its modules down at exit, after everything is written and
    told. A bug's traceback still ends the process the usual way."""
    from exportkit.frameworks import exit_now

    try:
        main()
        code = 0
    except SystemExit as stop:
        code = stop.code
    if code is not None and not isinstance(code, int):  # sys.exit("reason"): printed, status 1
        print(code, file=sys.stderr)
        code = 1
    exit_now(code or 0)
