"""What the user sees while the pipeline runs: a line per stage as it starts and ends, then a table."""
import sys
from typing import List

from rich.console import Console
from rich.table import Table

from exportkit.context import StageRecord

_STYLE = {"ok": "green", "failed": "bold red", "skipped": "yellow"}
console = Console(file=sys.stdout, highlight=False, soft_wrap=True)


def stage_started(name: str) -> None:
    console.print(f"[bold]>[/bold] {name} ...")


def stage_ended(record: StageRecord) -> None:
    style = _STYLE[record.status]
    detail = f"  ({record.detail})" if record.detail else ""
    console.print(f"  [{style}]{record.status.upper()}[/{style}] {record.name} "
                  f"in {record.seconds:.2f}s{detail}")


def progress(message: str) -> None:
    """A line of progress inside a long stage (verify, a large checkpoint)."""
    console.print(f"    {message}")


def summary(records: List[StageRecord], export_dir, published: bool) -> None:
    table = Table(title="exportkit", show_lines=False)
    table.add_column("stage")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    table.add_column("detail", overflow="fold")
    for r in records:
        style = _STYLE[r.status]
        table.add_row(r.name, f"[{style}]{r.status.upper()}[/{style}]", f"{r.seconds:.2f}", r.detail)
    console.print(table)
    if published:
        console.print(f"export: [bold]{export_dir}[/bold]")
    else:
        console.print(f"[bold red]nothing written[/bold red] at {export_dir}")
