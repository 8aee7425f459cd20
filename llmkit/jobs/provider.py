"""Provider mode: the rows to do go to the provider's Batch API (half the price, answers
within 24 hours). Split within the limits, uploaded, created, polled, downloaded, mapped
back to rows by ``custom_id``; the state file records every step before the next one, so
a rerun after a crash re-attaches to the batches it created instead of creating them
again.

State file (JSON, replaced atomically)::

    {"version": 1, "provider", "model", "base_url",
     "batches": [{"input_file_id", "id", "rows": [index, ...], "digest", "status",
                  "downloaded"}]}

(``digest``: of the rows' custom ids, so that a rerun with a changed input is refused
while its batches are out.)

A batch entry gets its ``input_file_id`` once uploaded and its ``id`` once created; an
entry with a file and no id (a crash between the two) is looked up on the server by its
input file before anything is created. A finished batch's rows are journaled, then the
entry is marked downloaded: a crash between the two downloads it again, which the
journal's reader takes once per row. Rows of an expired, cancelled or failed batch that
did not finish are recorded as failed (``batch_expired``, ``batch_cancelled``, ...) and
are sent again, in a new batch, by the next run.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from llmkit.jobs.batch_api import BatchAPI
from llmkit.jobs.errors import JobFileError
from llmkit.jobs.job import Job
from llmkit.jobs.jobfile import load_state, make_row, remove_state, save_state
from llmkit.jobs.progress import progress_bar
from llmkit.jobs.source import JobRow

__all__ = ["MAX_BATCH_BYTES", "MAX_BATCH_REQUESTS", "run_provider"]

MAX_BATCH_REQUESTS = 50_000
MAX_BATCH_BYTES = 200 * 1024 * 1024
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


def custom_id(row: JobRow) -> str:
    return f"llmkit-{row.index}-{row.hash[:8]}"


def rows_digest(rows: list[JobRow]) -> str:
    """What a batch entry's rows were sent as (their custom ids), to spot a changed input."""
    return hashlib.sha256(",".join(custom_id(r) for r in rows).encode()).hexdigest()[:16]


def check_rows(state: dict[str, Any], job: Job, path: Path) -> None:
    for entry in state["batches"]:
        rows = [job.rows[i] for i in entry["rows"] if i < len(job.rows)]
        if len(rows) != len(entry["rows"]) or rows_digest(rows) != entry.get("digest"):
            raise JobFileError(
                f"{path} tracks batches of input rows that have changed since they were "
                "submitted; rerun with the input they were made from, or cancel them "
                "(llmkit.jobs.cancel) and remove the state file")


def new_state(api: BatchAPI) -> dict[str, Any]:
    return {"version": 1, "provider": api.provider, "model": api.llm.model,
            "base_url": api.http.base_url, "batches": []}


def check_state(state: dict[str, Any], api: BatchAPI, path: Path) -> None:
    ours = (api.provider, api.llm.model, api.http.base_url)
    theirs = (state.get("provider"), state.get("model"), state.get("base_url"))
    if ours != theirs and any(not b.get("downloaded") for b in state.get("batches", [])):
        raise JobFileError(
            f"{path} tracks batches of provider {theirs[0]!r} model {theirs[1]!r} at {theirs[2]}, "
            f"not {ours[0]!r} {ours[1]!r} at {ours[2]}; rerun with that configuration or "
            "cancel them (llmkit.jobs.cancel)")


def chunks(api: BatchAPI, rows: list[JobRow], max_requests: int, max_bytes: int,
           job: Job) -> Iterator[tuple[list[JobRow], bytes]]:
    """Batches of rows within the limits (a row too large for any batch is recorded as
    failed)."""
    group: list[JobRow] = []
    lines: list[bytes] = []
    size = 0
    for row in rows:
        line = api.request_line(row, custom_id(row))
        if len(line) > max_bytes:
            job.record(row, {"type": "invalid_request", "message":
                             f"the request is {len(line)} bytes, more than a batch file may hold ({max_bytes})"})
            continue
        if group and (len(group) >= max_requests or size + len(line) > max_bytes):
            yield group, b"".join(lines)
            group, lines, size = [], [], 0
        group.append(row)
        lines.append(line)
        size += len(line)
    if group:
        yield group, b"".join(lines)


async def _download(api: BatchAPI, job: Job, entry: dict[str, Any], batch: dict[str, Any]) -> None:
    by_id = {custom_id(job.rows[i]): job.rows[i] for i in entry["rows"]}
    seen: dict[int, Any] = {}
    for key in ("output_file_id", "error_file_id"):
        file_id = batch.get(key)
        if not file_id:
            continue
        for raw in (await api.content(file_id)).split(b"\n"):
            if not raw.strip():
                continue
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue  # its row, if any, is recorded below as not returned
            cid = line.get("custom_id") if isinstance(line, dict) else None
            row = by_id.get(cid) if isinstance(cid, str) else None
            if row is not None and (row.index not in seen or key == "output_file_id"):
                seen[row.index] = api.outcome(line)
    status = batch.get("status")
    why = "; ".join(f"line {e.get('line')}: {e.get('message')}" if e.get("line") else str(e.get("message"))
                    for e in ((batch.get("errors") or {}).get("data") or [])[:3])
    for row in by_id.values():
        if row.index not in seen:
            seen[row.index] = {"type": f"batch_{status}",
                               "message": f"batch {batch.get('id')} ended {status} without this row"
                               + (f" ({why})" if why else "")}
    job.record_rows(make_row(job.rows[i], job.provider, job.model, job.mode, result)
                    for i, result in sorted(seen.items()))


async def run_provider(job: Job, api: BatchAPI, *, state_file: Path, resume: bool, progress: Any,
                       poll_interval: float, max_requests: int, max_bytes: int) -> None:
    state = load_state(state_file)
    if state is not None:
        check_state(state, api, state_file)
        if not resume and any(not b.get("downloaded") for b in state["batches"]):
            raise JobFileError(f"{state_file} tracks batches still to download; resume, or cancel "
                               "them first (llmkit.jobs.cancel)")
        state["batches"] = [b for b in state["batches"] if not b.get("downloaded")]
        state.update(new_state(api), batches=state["batches"])
        check_rows(state, job, state_file)
    else:
        state = new_state(api)
    pending = {i for b in state["batches"] for i in b["rows"]}
    todo = [r for r in job.todo() if r.index not in pending]
    for group, data in chunks(api, todo, max_requests, max_bytes, job):
        entry: dict[str, Any] = {"input_file_id": None, "id": None, "rows": [r.index for r in group],
                                 "digest": rows_digest(group), "status": None, "downloaded": False}
        entry["input_file_id"] = await api.upload(f"llmkit-{job.output.name}-{len(state['batches'])}.jsonl", data)
        state["batches"].append(entry)
        save_state(state_file, state)
        await _attach(api, entry, job, look_first=False)
        save_state(state_file, state)
    for entry in state["batches"]:
        if entry["id"] is None:  # uploaded, and maybe created before a crash
            await _attach(api, entry, job, look_first=True)
            save_state(state_file, state)
    job.batch_ids = [b["id"] for b in state["batches"]]
    total = sum(len(b["rows"]) for b in state["batches"])
    bar = progress_bar(progress, total=total, desc=f"{job.provider} batch")
    delay = min(poll_interval, 1.0)  # a small batch may be done in seconds: look soon, then less often
    try:
        while True:
            seen = 0
            for entry in state["batches"]:
                if not entry["downloaded"]:
                    batch = await api.retrieve(entry["id"])
                    entry["status"] = batch.get("status")
                    if entry["status"] in TERMINAL:
                        await _download(api, job, entry, batch)
                        entry["downloaded"] = True
                        save_state(state_file, state)
                    else:
                        counts = batch.get("request_counts") or {}
                        seen += int(counts.get("completed", 0)) + int(counts.get("failed", 0))
                        continue
                seen += len(entry["rows"])
            _set(bar, min(total, seen))
            if all(b["downloaded"] for b in state["batches"]):
                break
            await asyncio.sleep(delay)
            delay = min(poll_interval, delay * 2)
    finally:
        bar.close()
    remove_state(state_file)  # every batch downloaded: nothing left to re-attach to


def _set(bar: Any, n: int) -> None:
    current = getattr(bar, "n", 0)
    if n > current:
        bar.update(n - current)


async def _attach(api: BatchAPI, entry: dict[str, Any], job: Job, *, look_first: bool) -> None:
    found = await api.find(entry["input_file_id"]) if look_first else None
    batch = found or await api.create(entry["input_file_id"], {"llmkit_job": job.output.name})
    entry["id"] = batch["id"]
    entry["status"] = batch.get("status")
