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
import traceback
from typing import TYPE_CHECKING, List

import hydra
from omegaconf import DictConfig

from exportkit import schema

if TYPE_CHECKING:
    from exportkit.verification.process import Verifier

# The verification process every job of a sweep run in this process shares (started by the first
# job that verifies, ended at exit; see sweep_verifier). A module-level holder because Hydra's
# launcher calls app() once per job with nothing that lives across the jobs but this process.
_SWEEP_VERIFIER: List["Verifier"] = []


@hydra.main(config_path="pkg://exportkit.conf", config_name="config", version_base="1.3")
def app(cfg: DictConfig):
    """One export. Returns the export directory (a ``JobFailed`` for a failed job of a sweep)."""
    from exportkit import pipeline, signatures
    from exportkit.errors import print_error, show_traceback
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
    except BrokenPipeError:  # stdout closed under us (`| head -c 1`): said on stderr, nothing half-done
        quiet_stdout()
        done = "the export had been published before it" if export.published else "nothing was published"
        print(f"exportkit: error: the output was closed (a broken pipe); {done}", file=sys.stderr)
        sys.exit(1)
    except Exception as error:  # noqa: BLE001 - a user's mistake is one line; a bug its traceback
        if show_traceback(error):
            traceback.print_exc()
        else:
            print_error(error)
        sys.exit(1)
    finally:
        export.close()


def quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not fail on a closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def stop_on_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP end the run as Ctrl-C does (``Interrupted``): the staging
    directory removed, the lock released, the verification process ended, one line told. The first
    one puts the default actions back, so a second ends the process at once."""
    import signal

    from exportkit.errors import Interrupted

    def stop(signum, frame):
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        raise Interrupted(signal.Signals(signum).name)

    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        signal.signal(getattr(signal, name), stop)


def sweep_verifier(cfg: DictConfig):
    """The verifier shared by this process's sweep jobs (None with ``verify.early_start=false``:
    each job's verify stage then starts its own). Each job still loads its export afresh from disk."""
    from exportkit.verification.process import Verifier

    if not cfg.verify.early_start:
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


def main() -> None:
    from exportkit.commands import SUBCOMMANDS

    if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:  # subcommands for existing exports
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
    schema.register()
    stop_on_signals()
    try:
        app()
    except KeyboardInterrupt as stop:
        from exportkit.errors import Interrupted
        from exportkit.sweep_summary import write_interrupted

        interrupted = stop if isinstance(stop, Interrupted) else Interrupted()
        if full_error_wanted():
            raise
        finished = write_interrupted()  # a sweep's: the jobs that finished
        if finished is None:
            print(interrupted.line(), file=sys.stderr)
        else:
            print(
                f"exportkit: interrupted ({interrupted.signal_name}); the running job published nothing; "
                f"the {finished[0]} finished job(s) are summarized in {finished[1]}",
                file=sys.stderr,
            )
        sys.exit(interrupted.exit_status)
    except Exception as error:  # noqa: BLE001 - Hydra's errors become one line; a bug re-raised
        if full_error_wanted():
            raise
        told = error if isinstance(error, ExportkitError) else composition_error(error)
        if told is None and isinstance(error, OSError):  # Hydra's run directory (app tells its own)
            told = ExportkitError(
                f"cannot write Hydra's run directory{f' {error.filename}' if error.filename else ''}: "
                f"{error.strerror or error}; run from a directory you may write, or set hydra.run.dir=PATH "
                f"(hydra.sweep.dir=PATH with -m)"
            )
        if told is None:
            raise
        print_error(told)
        sys.exit(1)


def console() -> None:
    """``python -m exportkit`` and the ``exportkit`` console script."""
    main()
