"""The summary of a sweep (``python -m exportkit -m ...``): one row per job, in the terminal and
in the sweep directory as ``summary.csv`` and ``summary.md``.

It is a Hydra callback (``hydra.callbacks.sweep_summary`` in ``conf/config.yaml``), so it works
with every launcher: ``on_job_end`` runs where the job ran (in a joblib worker, on a SLURM
node) and writes the job's row to ``exportkit_job.json`` in the job's directory;
``on_multirun_end`` runs where the sweep was started, collects the rows of this sweep and
writes the summary. A failed job (``exportkit.cli`` returns a ``JobFailed`` instead of raising,
so the other jobs go on) shows with its one-line reason, and the sweep then exits with status 1.

Example::

    python -m exportkit -m model=keras model.build._target_=my_models.mlp +model.build.units=4,8
    # ... multirun/2026-11-24/15-40-00/summary.md
"""

import csv
import io
import json
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from exportkit.artifact.facts import format_size
from exportkit.errors import first_line

JOB_RECORD = "exportkit_job.json"


@dataclass
class JobFailed:
    """What a failed job of a sweep returns (picklable: it travels back from joblib workers)."""

    reason: str
    stage: str = ""  # the stage that failed, "" when the config was rejected before any ran
    user_error: bool = True  # False: a bug in exportkit or a stage, its traceback was printed
    stages: List[Dict[str, Any]] = field(default_factory=list)  # {name, status, seconds}

    @classmethod
    def from_error(cls, error: BaseException, user_error: bool, records=None) -> "JobFailed":
        """``records``: the failed export's ``StageRecord``s (``pipeline.Export.records``)."""
        records = list(records or [])
        failed = next((r.name for r in records if r.status == "failed"), "")
        reason = first_line(error)
        if not user_error:
            reason = f"{type(error).__name__}: {reason}"
        return cls(
            reason, failed, user_error, [{"name": r.name, "status": r.status, "seconds": r.seconds} for r in records]
        )


class SweepSummary(Callback):
    """Writes ``summary.csv``/``summary.md`` at the end of a multirun and prints the table.

    ``fail_on_error``: exit with status 1 when a job failed (after writing the summary).
    """

    def __init__(self, fail_on_error: bool = True) -> None:
        self.fail_on_error = fail_on_error
        self.sweep_id: Optional[str] = None
        self.sweep_dir: Optional[Path] = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Rows are matched to this sweep by id: a reused sweep dir may hold an older sweep's rows.
        # The callback object is pickled to the launcher's workers after this, id included.
        self.sweep_id = uuid.uuid4().hex
        self.sweep_dir = Path(config.hydra.sweep.dir).absolute()
        RUNNING[:] = [self]

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if self.sweep_id is None:  # a single run: its own report is the summary
            return
        row = job_row(config, job_return)
        row["sweep_id"] = self.sweep_id
        out = Path(config.hydra.runtime.output_dir) / JOB_RECORD
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(row, indent=2) + "\n")  # unsorted: stages keep their run order
        tmp.replace(out)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        RUNNING.clear()
        sweep_dir = Path(config.hydra.sweep.dir).absolute()
        rows = collect(sweep_dir, self.sweep_id)
        if not rows:
            print(f"exportkit: no job of this sweep left a {JOB_RECORD} under {sweep_dir}", file=sys.stderr)
            return
        write(rows, sweep_dir)
        show(rows, sweep_dir)
        failed = [r for r in rows if r["status"] != "ok"]
        if failed and self.fail_on_error:
            print(
                f"exportkit: {len(failed)} of {len(rows)} jobs failed (see {sweep_dir / 'summary.md'})", file=sys.stderr
            )
            sys.stdout.flush()
            # SystemExit, not an exception: Hydra turns a callback's exception into a warning.
            sys.exit(1)


# The sweep this process is running (set when it starts, cleared when it ends): a signal that stops
# it still leaves the summary of the jobs that finished (``write_interrupted``). Module-level, as
# Hydra keeps the callback object to itself.
RUNNING: List[SweepSummary] = []


def write_interrupted() -> Optional[Tuple[int, Path]]:
    """After a signal stopped this process's sweep: write the summary of the jobs that finished;
    (how many, summary.md's path), or None when no sweep ran or no job finished."""
    if not RUNNING:
        return None
    summary = RUNNING.pop()
    if summary.sweep_dir is None:
        return None
    rows = collect(summary.sweep_dir, summary.sweep_id)
    if not rows:
        return None
    write(rows, summary.sweep_dir)
    return len(rows), summary.sweep_dir / "summary.md"


def job_row(config: DictConfig, job_return: Any) -> Dict[str, Any]:
    """The summary row of one finished job, read from its return value and its export."""
    from hydra.core.utils import JobStatus

    row: Dict[str, Any] = {
        "job": int(config.hydra.job.num),
        "overrides": list(job_return.overrides or []),
        "status": "ok",
        "reason": "",
        "export_dir": "",
        "saved_model_bytes": None,
        "checkpoint_bytes": None,
        "stages": {},
        "verify_max_abs_error": None,
        "verify": "",
        "p50_ms": {},
        "contract": "-",
        "fingerprint": "",
        "digest": "",
        "formats": {},
    }
    value = job_return._return_value
    if job_return.status != JobStatus.COMPLETED:  # raised (HYDRA_FULL_ERROR, or not via exportkit.cli)
        value = JobFailed.from_error(value, user_error=False)
    if isinstance(value, JobFailed):
        row.update(
            status="failed",
            reason=(f"{value.stage}: " if value.stage else "") + value.reason,
            stages={s["name"]: round(s["seconds"], 3) for s in value.stages},
        )
        return row
    export_dir = Path(str(value))
    row["export_dir"] = str(export_dir)
    row.update(export_facts(export_dir))
    return row


def export_facts(export_dir: Path) -> Dict[str, Any]:
    """Sizes, stage times, verify status and error, latency, contract, fingerprint and digest of a
    finished export (``exportkit.artifact.facts``, as ``exportkit inspect`` reads them), as a row's fields."""
    from exportkit.artifact.facts import export_facts as facts_of

    facts = facts_of(export_dir)
    return {
        "saved_model_bytes": facts["sizes"]["saved_model"],
        "checkpoint_bytes": facts["sizes"]["variables"] if (export_dir / "variables").is_dir() else None,
        "stages": {s["name"]: s["seconds"] for s in facts["stages"]},
        "verify_max_abs_error": facts["verify"].get("max_abs_error"),
        "verify": facts["verify"]["status"],
        "p50_ms": warm_medians(facts["latency"]),
        # same / compatible / breaking against the previous version (or serving.compare_to); - when none
        "contract": (facts["contract_check"] or {}).get("status", "-"),
        "fingerprint": facts["fingerprint"],
        "digest": facts["digest"] or "",
        "formats": {name: format_cells(record) for name, record in facts["formats"].items()},
    }


def format_cells(record: Dict[str, Any]) -> Dict[str, Any]:
    """What a row keeps of one deployment format: status, bytes, errors, top-1, warm p50 per batch."""
    p50 = {str(c["batch"]): c["p50_ms"] for cases in (record.get("latency") or {}).values() for c in cases.values()}
    return {
        "status": record["status"],
        "bytes": record["size_bytes"] if record["status"] == "ok" else None,
        "max_scaled_error": record.get("max_scaled_error"),
        "top1": record.get("top1_agreement"),
        "p50_ms": dict(sorted(p50.items(), key=lambda item: int(item[0]))),
    }


def _formats(rows: List[Dict[str, Any]]) -> List[str]:
    names: List[str] = []
    for row in rows:
        names += [n for n in row.get("formats") or {} if n not in names]
    return names


def warm_medians(by_device: Optional[Dict[str, Any]]) -> Dict[str, float]:
    """Batch size -> verify's warm median latency in ms (the slowest serve signature and case at
    that batch, on the first device verified): the ``p50_ms_b<N>`` columns."""
    if not by_device:
        return {}
    found: Dict[str, float] = {}
    for cases in next(iter(by_device.values()))["signatures"].values():
        for case in cases.values():
            batch = str(case["batch"])
            found[batch] = max(found.get(batch, 0.0), case["p50_ms"])
    return dict(sorted(found.items(), key=lambda item: int(item[0])))


def _batches(rows: List[Dict[str, Any]]) -> List[str]:
    return sorted({b for row in rows for b in row.get("p50_ms") or {}}, key=int)


def collect(sweep_dir: Path, sweep_id: Optional[str]) -> List[Dict[str, Any]]:
    rows = []
    for path in sweep_dir.rglob(JOB_RECORD):
        row = json.loads(path.read_text())
        if sweep_id is None or row.get("sweep_id") == sweep_id:
            rows.append(row)
    return sorted(rows, key=lambda r: r["job"])


def columns(rows: List[Dict[str, Any]]) -> List[str]:
    stage_names: List[str] = []
    for row in rows:
        stage_names += [s for s in row["stages"] if s not in stage_names]
    return (
        ["job", "overrides", "status", "reason", "export_dir", "saved_model_bytes", "checkpoint_bytes"]
        + [f"{s}_s" for s in stage_names]
        + ["verify", "verify_max_abs_error"]
        + [f"p50_ms_b{b}" for b in _batches(rows)]
        + ["contract", "fingerprint", "digest"]
        + [
            f"{name}_{field}"
            for name in _formats(rows)
            for field in [*FORMAT_FIELDS, *(f"p50_ms_b{b}" for b in _batches(rows))]
        ]
    )


def flat(row: Dict[str, Any], names: List[str]) -> Dict[str, Any]:
    out = {}
    for name in names:
        if name.endswith("_s") and name[:-2] in row["stages"]:
            out[name] = row["stages"][name[:-2]]
        elif name.endswith("_s"):
            out[name] = ""
        elif name.startswith("p50_ms_b"):
            value = (row.get("p50_ms") or {}).get(name[len("p50_ms_b") :])
            out[name] = "" if value is None else value
        elif name == "overrides":
            out[name] = " ".join(row["overrides"])
        elif (found := format_field(name, row)) is not None:
            fmt, field = found
            cells = row["formats"][fmt]
            value = cells["p50_ms"].get(field[len("p50_ms_b") :]) if field.startswith("p50_ms_b") else cells.get(field)
            out[name] = "" if value is None else value
        else:
            value = row.get(name)
            out[name] = "" if value is None else value
    return out


def format_field(column: str, row: Dict[str, Any]) -> Optional[Tuple[str, str]]:
    """``("my_onnx", "top1")`` for the column ``my_onnx_top1`` when the row has that format."""
    for fmt in row.get("formats") or {}:
        rest = column[len(fmt) + 1 :]
        if column.startswith(f"{fmt}_") and (rest in FORMAT_FIELDS or rest.startswith("p50_ms_b")):
            return fmt, rest
    return None


FORMAT_FIELDS = ("status", "bytes", "max_scaled_error", "top1")


def write(rows: List[Dict[str, Any]], sweep_dir: Path) -> None:
    names = columns(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(flat(row, names))
    (sweep_dir / "summary.csv").write_text(buffer.getvalue())
    (sweep_dir / "summary.md").write_text(markdown(rows))
    points = picture_points(rows)
    if points:
        (sweep_dir / "summary.svg").write_text(picture(points))


def varying_overrides(rows: List[Dict[str, Any]]):
    """(overrides common to every job, per job the ones that differ): what the table shows."""
    common = [o for o in rows[0]["overrides"] if all(o in r["overrides"] for r in rows)]
    return common, [[o for o in r["overrides"] if o not in common] for r in rows]


def display_rows(rows: List[Dict[str, Any]]):
    """Header and human-readable cells shared by the terminal table and summary.md."""
    stage_names = [n[:-2] for n in columns(rows) if n.endswith("_s")]
    header = (
        ["job", "overrides", "status", "saved_model", "checkpoint"]
        + [f"{s} (s)" for s in stage_names]
        + ["verify max err"]
        + [f"p50 b{b} (ms)" for b in _batches(rows)]
        + [f"{name} (size, err/scale, top-1, p50)" for name in _formats(rows)]
        + ["contract", "fingerprint", "digest", "export / reason"]
    )
    _, varying = varying_overrides(rows)
    cells = []
    for row, own in zip(rows, varying):
        error = row["verify_max_abs_error"]
        cells.append(
            [
                str(row["job"]),
                " ".join(own) or "(none)",
                row["status"].upper(),
                format_size(row["saved_model_bytes"]),
                format_size(row["checkpoint_bytes"]),
            ]
            + [f"{row['stages'][s]:.2f}" if s in row["stages"] else "-" for s in stage_names]
            + [f"{error:.3g}" if error is not None else (row["verify"] or "-")]
            + [_ms((row.get("p50_ms") or {}).get(b)) for b in _batches(rows)]
            + [format_cell((row.get("formats") or {}).get(name)) for name in _formats(rows)]
            + [
                row.get("contract") or "-",
                row["fingerprint"] or "-",
                row["digest"][:12] or "-",
                row["export_dir"] if row["status"] == "ok" else row["reason"],
            ]
        )
    return header, cells


def markdown(rows: List[Dict[str, Any]]) -> str:
    common, _ = varying_overrides(rows)
    header, cells = display_rows(rows)
    failed = sum(r["status"] != "ok" for r in rows)
    lines = [f"# exportkit sweep: {len(rows) - failed} ok, {failed} failed", ""]
    if common:
        lines += [f"Common overrides: `{' '.join(common)}`", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for row in cells:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines) + "\n"


def show(rows: List[Dict[str, Any]], sweep_dir: Path) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    common, _ = varying_overrides(rows)
    header, cells = display_rows(rows)
    failed = sum(r["status"] != "ok" for r in rows)
    # A log file or a pipe gets the whole table, not one folded to 80 columns.
    console = Console(
        file=sys.stdout,
        highlight=False,
        soft_wrap=False,
        width=None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", 240)),
    )
    # the headline on a line of its own: a table title is folded with the table when it is wide
    console.print(f"exportkit sweep: {len(rows) - failed} ok, {failed} failed")
    table = Table()
    for i, name in enumerate(header):
        # overrides and the path/reason may fold, but not into a sliver of a column
        widest = max(len(row[i]) for row in cells)
        table.add_column(name, overflow="fold", min_width=min(max(widest, len(name)), 40))
    for row in cells:
        style = "green" if row[2] == "OK" else "bold red"
        # escaped: overrides such as +experiment=[text,gpu] are not rich markup
        table.add_row(*map(escape, row[:2]), f"[{style}]{row[2]}[/{style}]", *map(escape, row[3:]))
    console.print(table)
    if common:
        console.print(f"common overrides: {escape(' '.join(common))}")
    console.print(f"summary: {sweep_dir / 'summary.md'}, {sweep_dir / 'summary.csv'}")


def _ms(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3g}"


def format_cell(cells: Optional[Dict[str, Any]]) -> str:
    """``2.4 KiB, 8.5e-08, 100%, b1 0.005 ms`` for an artifact; its status when it has none."""
    if cells is None:
        return "-"
    if cells["status"] != "ok":
        error = cells.get("max_scaled_error")
        return cells["status"] + (f" (err {error:.2g})" if error is not None else "")
    top1 = f"{cells['top1']:.0%}" if cells.get("top1") is not None else "-"
    error = f"{cells['max_scaled_error']:.2g}" if cells.get("max_scaled_error") is not None else "-"
    p50 = ", ".join(f"b{b} {_ms(v)} ms" for b, v in cells["p50_ms"].items())
    return f"{format_size(cells['bytes'])}, {error}, {top1}" + (f", {p50}" if p50 else "")


def picture_points(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One point per verified artifact of every job: its label, size, warm p50 at its largest batch,
    error relative to the outputs' scale and top-1 agreement."""
    _, varying = varying_overrides(rows)
    points = []
    for row, own in zip(rows, varying):
        for name, cells in (row.get("formats") or {}).items():
            if cells["status"] == "ok" and cells["p50_ms"] and cells["bytes"]:
                latency = list(cells["p50_ms"].values())[-1]
                label = f"{row['job']} {name}" + (f" ({' '.join(o.split('=', 1)[-1] for o in own)})" if own else "")
                points.append(
                    {
                        "label": label,
                        "bytes": cells["bytes"],
                        "ms": latency,
                        "error": cells["max_scaled_error"] or 0.0,
                        "top1": cells.get("top1"),
                    }
                )
    return points


def picture(points: List[Dict[str, Any]]) -> str:
    """An SVG scatter of the artifacts: size (x, log) against warm p50 latency (y, log), each point
    coloured by its error relative to the outputs' scale (green 1e-7 ... red 1e-1) and labelled
    with its job, format, variant and top-1 agreement: ``summary.svg`` beside ``summary.md``."""
    import math

    width, height, margin = 760, 480, 70

    def span(values):
        low, high = math.log10(min(values)), math.log10(max(values))
        return (low - 0.3, high + 0.3) if high - low < 1e-9 else (low - 0.1 * (high - low), high + 0.1 * (high - low))

    (x0, x1), (y0, y1) = span([p["bytes"] for p in points]), span([p["ms"] for p in points])

    def x(value):
        return margin + (math.log10(value) - x0) / (x1 - x0) * (width - 2 * margin)

    def y(value):
        return height - margin - (math.log10(value) - y0) / (y1 - y0) * (height - 2 * margin)

    def colour(error):
        share = min(max((math.log10(max(error, 1e-12)) + 7) / 6, 0.0), 1.0)  # 1e-7 -> 0, 1e-1 -> 1
        return f"rgb({int(40 + 200 * share)},{int(170 - 130 * share)},60)"

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<line x1="{margin}" y1="{height - margin}" x2="{width - margin}" y2="{height - margin}" stroke="black"/>',
        f'<line x1="{margin}" y1="{margin}" x2="{margin}" y2="{height - margin}" stroke="black"/>',
        f'<text x="{width / 2}" y="{height - 25}" text-anchor="middle">artifact size (log)</text>',
        f'<text x="18" y="{height / 2}" transform="rotate(-90 18 {height / 2})" text-anchor="middle">'
        "warm p50 latency, largest batch (log)</text>",
        f'<text x="{margin}" y="30" font-size="13">exportkit sweep: size against latency; colour = max error / '
        "outputs' scale (green 1e-7, red 1e-1)</text>",
    ]
    for low, high, to_pos, axis in ((x0, x1, x, "x"), (y0, y1, y, "y")):
        for exponent in range(math.floor(low), math.ceil(high) + 1):
            value = 10.0**exponent
            if not low <= exponent <= high:
                continue
            pos = to_pos(value)
            tick = format_size(value) if axis == "x" else f"{value:g} ms"
            out.append(
                f'<text x="{pos:.1f}" y="{height - margin + 16}" text-anchor="middle">{tick}</text>'
                if axis == "x"
                else f'<text x="{margin - 6}" y="{pos + 4:.1f}" text-anchor="end">{tick}</text>'
            )
    for point in points:
        top1 = f", top-1 {point['top1']:.0%}" if point["top1"] is not None else ""
        px, py = x(point["bytes"]), y(point["ms"])
        out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="6" fill="{colour(point["error"])}" stroke="black"/>')
        text = f"{point['label']}: err {point['error']:.1g}{top1}".replace("&", "&amp;").replace("<", "&lt;")
        out.append(f'<text x="{px + 9:.1f}" y="{py + 4:.1f}">{text}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
