"""Run the whole consumer matrix (tests/test_consumers.py, every cell) and print its table.

    .venv/bin/python bench/consumer_matrix.py                 # or: make consumer-matrix
    .venv/bin/python bench/consumer_matrix.py -k bert_tiny    # extra pytest arguments pass through
    .venv/bin/python bench/consumer_matrix.py --out matrix.md # keep the table

The table (model x consumer: ok / consumer limit / FAIL, n/a where a consumer does not apply)
is what docs/models.md shows ("Which tools read an export"); under it, each cell that is not ok
with the first line of its reason (for a consumer limit: the failure of the same consumer on the
model's own library export).
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
    return run_matrix("tests/test_consumers.py", "EXPORTKIT_MATRIX_OUT", __doc__.splitlines()[0], argv)


def run_matrix(test_file: str, table_variable: str, description: str, argv=None) -> int:
    """Run every cell of the matrix in ``test_file`` (its module writes the table to the file
    ``table_variable`` names) and print the table; also bench/format_matrix.py's runner."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args, pytest_args = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "matrix.md"
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            **{table_variable: str(table)},
        )
        start = time.perf_counter()
        # -m replaces the default addopts' `not consumers`: every cell runs.
        done = subprocess.run(
            [sys.executable, "-m", "pytest", test_file, "-q", "-rs", "-m", "not slow and not ray", *pytest_args],
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
