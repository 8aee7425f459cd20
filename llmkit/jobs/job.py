"""One run of a job: the input rows, what earlier runs left (output and journal), the
rows still to do, this run's counts and usage, and the final output
(:mod:`llmkit.jobs.jobfile` does the file work)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmkit.core.types import Usage
from llmkit.jobs.jobfile import (
    Journal,
    compact,
    done_rows,
    encode_row,
    journal_path,
    make_row,
    read_rows,
)
from llmkit.jobs.source import JobRow

__all__ = ["Job", "JobSummary"]


@dataclass
class JobSummary:
    """What a run did. ``rows``: input rows; ``answered`` / ``failed``: rows this run
    answered or recorded as failed; ``already_done``: rows an earlier run had answered;
    ``pending``: rows without an outcome yet (an interrupted run); ``usage``: this run's
    token totals; ``wall_time`` in seconds; ``batch_ids``: the provider batches this run
    created or re-attached to (provider mode)."""

    rows: int
    answered: int
    failed: int
    already_done: int
    usage: Usage
    wall_time: float
    mode: str
    provider: str
    model: str
    output: str
    batch_ids: list[str] = field(default_factory=list)

    @property
    def pending(self) -> int:
        return self.rows - self.answered - self.failed - self.already_done

    def __str__(self) -> str:
        return (
            f"{self.provider} {self.model}: {self.answered} answered, {self.failed} failed, "
            f"{self.already_done} already done ({self.rows} prompts)"
        )


class Job:
    """Rows in, rows out. ``record`` journals an outcome at once; ``finish`` writes the
    output (all rows kept so far, in input order) and removes the journal."""

    def __init__(self, rows: list[JobRow], output: str | os.PathLike[str], *, provider: str, model: str,
                 mode: str, resume: bool = True, force: bool = False) -> None:
        self.rows = rows
        self.provider, self.model, self.mode = provider, model, mode
        self.started = time.perf_counter()
        self.to_stdout = str(output) == "-"
        self.output = Path(output)
        self.answered = self.failed = 0
        self.usage = Usage()
        self.batch_ids: list[str] = []
        self.kept: dict[int, dict[str, Any]] = {}
        self._journal: Journal | None = None
        self._stdout_next = 0
        if not self.to_stdout:
            if resume:
                earlier = read_rows(self.output) + read_rows(journal_path(self.output))
                self.kept = done_rows(rows, earlier, provider=provider, model=model,
                                      output=self.output, force=force)
            self._journal = Journal(self.output)
            if not resume:
                self._journal.remove()
            self._journal.open()  # a read-only directory fails here, before any request
        self.already_done = sum("output" in r for r in self.kept.values())
        self._had_journal = self._journal is not None and self._journal.path.stat().st_size > 0

    @property
    def changed(self) -> bool:
        """Whether the output would change: rows recorded, or a journal left to fold in."""
        return bool(self.answered or self.failed or self._had_journal)

    def todo(self) -> list[JobRow]:
        """The rows without an answer yet (failed rows are tried again)."""
        return [r for r in self.rows if "output" not in self.kept.get(r.index, ())]

    def record(self, row: JobRow, result: Any) -> dict[str, Any]:
        rec = make_row(row, self.provider, self.model, self.mode, result)
        self.record_rows((rec,))
        return rec

    def record_rows(self, recs: Iterable[dict[str, Any]]) -> None:
        recs = list(recs)
        if self._journal is not None:
            self._journal.append_many(recs)
        for rec in recs:
            self.kept[rec["index"]] = rec
            if "output" in rec:
                self.answered += 1
                u = rec.get("usage")
                if u:
                    self.usage = self.usage + Usage(**u)
            else:
                self.failed += 1
        if self.to_stdout:
            self._flush_stdout()

    def _flush_stdout(self) -> None:
        out = sys.stdout.buffer
        while self._stdout_next in self.kept:
            out.write(encode_row(self.kept[self._stdout_next]))
            self._stdout_next += 1
        out.flush()

    def finish(self) -> None:
        """Replace the output with every row kept, in input order; remove the journal."""
        if self._journal is not None:
            self._journal.close()
            compact(self.output, self.kept)

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            if not self.changed:
                self._journal.remove()  # nothing was written to it

    def summary(self) -> JobSummary:
        return JobSummary(
            rows=len(self.rows), answered=self.answered, failed=self.failed,
            already_done=self.already_done, usage=self.usage,
            wall_time=time.perf_counter() - self.started, mode=self.mode,
            provider=self.provider, model=self.model, output=str(self.output),
            batch_ids=list(self.batch_ids),
        )
