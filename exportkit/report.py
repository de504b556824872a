"""What the user sees while the pipeline runs: a line per stage as it starts and ends, then a table.

A ``Reporter`` travels on the export context; ``Reporter(verbose=False)`` (the API's and the
benchmarks' ``verbose=False``) prints nothing. rich is imported only when something is printed.
"""

import sys
from typing import TYPE_CHECKING, Any, Dict, List, Optional

if TYPE_CHECKING:
    from rich.console import Console

_STYLE = {"ok": "green", "failed": "bold red", "skipped": "yellow"}


class Reporter:
    def __init__(self, verbose: bool = True, file=None) -> None:
        self.verbose = verbose
        self._file = file
        self._console: Optional[Console] = None
        self._verification: Optional[Dict[str, Any]] = None

    def _print(self, text) -> None:
        if not self.verbose:
            return
        if self._console is None:
            from rich.console import Console

            class Told(Console):
                def on_broken_pipe(self) -> None:
                    """rich's hook for a closed output: raise, so the run stops as on any other
                    failure and says why (rich's own ends the process with status 1, silently)."""
                    self.quiet = True
                    raise BrokenPipeError("the output was closed")

            self._console = Told(file=self._file or sys.stdout, highlight=False, soft_wrap=True)
        self._console.print(text)

    def stage_started(self, name: str) -> None:
        self._print(f"[bold]>[/bold] {name} ...")

    def stage_ended(self, record) -> None:
        style = _STYLE[record.status]
        detail = f"  ({record.detail})" if record.detail else ""
        self._print(f"  [{style}]{record.status.upper()}[/{style}] {record.name} in {record.seconds:.2f}s{detail}")

    def progress(self, message: str) -> None:
        """A line of progress inside a long stage (verify, a large checkpoint)."""
        self._print(f"    {message}")

    def verification(self, state: dict) -> None:
        """What the export's verification came to (``exportkit.verification.check.require_verified``): told in
        the summary."""
        self._verification = state

    def verification_line(self) -> str:
        state = self._verification
        if state is None:
            return ""
        if not state.get("verified"):
            return f"[bold yellow]UNVERIFIED[/bold yellow]: {state.get('reason', 'no verify case ran')}"
        line = f"verified: {state['cases']} cases on {', '.join(state['devices_verified'])}"
        missing = state.get("devices_not_verified") or {}
        if missing:
            line += "; [yellow]not verified[/yellow] on " + ", ".join(f"{d} ({r})" for d, r in missing.items())
        return line

    def summary(self, records: List, export_dir, published: bool) -> None:
        if not self.verbose:
            return
        from rich.table import Table

        table = Table(title="exportkit", show_lines=False)
        table.add_column("stage")
        table.add_column("status")
        table.add_column("seconds", justify="right")
        table.add_column("detail", overflow="fold")
        for r in records:
            style = _STYLE[r.status]
            table.add_row(r.name, f"[{style}]{r.status.upper()}[/{style}]", f"{r.seconds:.2f}", r.detail)
        self._print(table)
        if published:
            if self.verification_line():
                self._print(self.verification_line())
            self._print(f"export: [bold]{export_dir}[/bold]")
        else:
            self._print(f"[bold red]nothing written[/bold red] at {export_dir}")
