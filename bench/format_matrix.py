"""Run the whole format matrix (tests/test_format_matrix.py: every model of the consumer matrix x
every deployment format) and print its table.

    .venv/bin/python bench/format_matrix.py                   # every cell
    .venv/bin/python bench/format_matrix.py -k bert_tiny      # extra pytest arguments pass through
    .venv/bin/python bench/format_matrix.py --out matrix.md   # keep the table

The table (model x format: ``ok <max error relative to the outputs' scale>``, with the top-1
agreement for the quantized column; ``limit: <why>`` where the format's own converter or runtime
fails the same way on the model's own library export; ``FAIL`` where only exportkit's fails) is
what docs/formats.md shows; under it, each cell that is not ok with its full reason.
Exits with pytest's status, so a FAIL cell fails the run.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args, pytest_args = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "matrix.md"
        env = dict(
            os.environ,
            EXPORTKIT_FORMAT_MATRIX_OUT=str(table),
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        )
        start = time.perf_counter()
        # -m replaces the default addopts' `not consumers`: every cell runs.
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "tests/test_format_matrix.py",
                "-q",
                "-rs",
                "-m",
                "not slow and not ray",
                *pytest_args,
            ],
            cwd=ROOT,
            env=env,
        )
        seconds = time.perf_counter() - start
        text = table.read_text() if table.exists() else "(no table: the run ended before the matrix module did)\n"
    print(f"\n{text}\n({seconds:.0f} s, pytest exit status {done.returncode})")
    if args.out:
        args.out.write_text(text)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
