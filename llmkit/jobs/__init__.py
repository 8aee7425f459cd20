"""Batch jobs (API.md "Batch jobs"): many prompts from a file to a JSONL output that loses
nothing, live on this machine or through the provider's Batch API.

* :func:`run` — ``mode="live"``: fan-out through the instance's limiter and rate limits;
  ``mode="provider"``: OpenAI's Batch API (files + ``/batches``, half the price, within
  24 hours), with a state file that lets a rerun re-attach instead of submitting again.
* :func:`cancel` — cancel the provider batches a state file tracks.
* The input rules are :mod:`llmkit.jobs.source`'s, the files :mod:`llmkit.jobs.jobfile`'s.
  ``llmkit.sync.run_job`` is the blocking twin of :func:`run`; ``llmkit batch`` the command
  line; :func:`llmkit.ray.run_batch` the same job file on a Ray cluster.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from llmkit.base import BaseLLM
from llmkit.core.config import LLMConfig
from llmkit.core.errors import ConfigError
from llmkit.jobs.errors import JobFileError, JobWriteError, SourceError
from llmkit.jobs.job import Job, JobSummary
from llmkit.jobs.jobfile import load_state, save_state, state_path
from llmkit.jobs.source import JobRow, read_source

__all__ = ["JobFileError", "JobRow", "JobSummary", "JobWriteError", "SourceError", "cancel", "read_source", "run"]

Source = str | os.PathLike[str] | bytes | Iterable[str | dict[str, Any]]


def _instance(config: LLMConfig | Mapping[str, Any] | BaseLLM) -> tuple[BaseLLM, bool]:
    """(the instance, whether this call owns it and closes it)."""
    if isinstance(config, BaseLLM):
        return config, False
    from llmkit.registry import create_llm

    return create_llm(config if isinstance(config, LLMConfig) else dict(config)), True


async def run(
    source: Source,
    config: LLMConfig | Mapping[str, Any] | BaseLLM,
    *,
    output: str | os.PathLike[str],
    mode: str = "live",
    concurrency: int = 64,
    resume: bool = True,
    progress: Any = True,
    state: str | os.PathLike[str] | None = None,
    force: bool = False,
    poll_interval: float = 15.0,
    max_batch_requests: int | None = None,
    max_batch_bytes: int | None = None,
    name: str = "input",
) -> JobSummary:
    """Answer every row of ``source`` into ``output`` (JSONL, one row per input row, in
    input order); see the module docstring and API.md "Batch jobs".

    ``config`` is a config, a dict, or an instance (then it is used and left open).
    ``resume``: keep the answers an earlier run left in ``output`` (and its journal) and
    answer only the rest; ``False`` starts over. ``force``: use an output that holds
    answers of another provider, model or prompts file. ``progress``: a bar on stderr
    when it is a terminal (or a tqdm-like object). Provider mode: ``state`` (default
    ``OUTPUT.state.json``), ``poll_interval`` seconds between polls, and the split limits
    ``max_batch_requests`` (50,000) and ``max_batch_bytes`` (200 MB) per batch file.
    ``output="-"`` writes the rows to stdout (live mode, no resume). ``name``: what error
    messages call a source that is not a path (bytes, or an iterable of lines and rows).
    """
    if mode not in ("live", "provider"):
        raise ConfigError(f"mode must be 'live' or 'provider', not {mode!r}")
    if concurrency < 1:
        raise ConfigError("concurrency must be >= 1")
    rows = read_source(source, name=name)
    if not rows:
        raise SourceError(f"{source if isinstance(source, str | os.PathLike) else name} holds no prompts")
    to_stdout = str(output) == "-"
    if to_stdout and mode == "provider":
        raise ConfigError("provider mode writes to a file (its state file sits beside it), not stdout")
    llm, owned = _instance(config)
    try:
        api = None
        if mode == "provider":
            from llmkit.jobs.batch_api import BatchAPI

            api = BatchAPI(llm)  # not OpenAI's wire format: NotSupportedError
            await api.probe()  # no Batch API there: NotSupportedError before any upload
        job = Job(rows, output, provider=llm.provider, model=llm.model, mode=mode,
                  resume=resume and not to_stdout, force=force)
        try:
            if api is None:
                from llmkit.jobs.live import run_live

                await run_live(job, llm, concurrency=concurrency, progress=progress)
            else:
                from llmkit.jobs.provider import MAX_BATCH_BYTES, MAX_BATCH_REQUESTS, run_provider

                await run_provider(
                    job, api,
                    state_file=Path(state) if state is not None else state_path(job.output),
                    resume=resume, progress=progress, poll_interval=poll_interval,
                    max_requests=max_batch_requests or MAX_BATCH_REQUESTS,
                    max_bytes=max_batch_bytes or MAX_BATCH_BYTES,
                )
        except JobWriteError:
            job.close()  # a full disk: the journal keeps what it could, the output is as it was
            raise
        except BaseException:
            # what is done is kept, also when the run stops early (Ctrl-C, an error)
            job.close()
            if job.changed:
                with contextlib.suppress(Exception):
                    job.finish()
            raise
        job.close()
        job.finish()
        return job.summary()
    finally:
        if owned:
            await llm.aclose()


async def cancel(state: str | os.PathLike[str],
                 config: LLMConfig | Mapping[str, Any] | BaseLLM | None = None) -> list[str]:
    """Cancel the provider batches the state file ``state`` tracks that are not finished;
    returns their ids. ``config`` defaults to the state's provider, model and base URL,
    with the key from the environment. A rerun of the job then keeps what the cancelled
    batches finished and submits the rest again."""
    from llmkit.jobs.batch_api import BatchAPI

    path = Path(state)
    data = load_state(path)
    if data is None:
        raise JobFileError(f"{path} does not exist: no batches to cancel")
    if config is None:
        config = LLMConfig.from_env(data["provider"], model=data["model"], base_url=data["base_url"])
    llm, owned = _instance(config)
    try:
        api = BatchAPI(llm)
        cancelled = []
        for entry in data["batches"]:
            if entry.get("id") and not entry.get("downloaded") and entry.get("status") not in (
                    "completed", "failed", "expired", "cancelled"):
                batch = await api.cancel(entry["id"])
                entry["status"] = batch.get("status")
                cancelled.append(entry["id"])
        save_state(path, data)
        return cancelled
    finally:
        if owned:
            await llm.aclose()
