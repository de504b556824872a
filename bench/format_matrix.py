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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.consumer_matrix import run_matrix  # noqa: E402  (the repository root on the path first)

if __name__ == "__main__":
    sys.exit(run_matrix("tests/test_format_matrix.py", "EXPORTKIT_FORMAT_MATRIX_OUT", __doc__.splitlines()[0]))
