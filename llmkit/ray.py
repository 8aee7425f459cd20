"""Distributed batch on a Ray cluster (``pip install 'llmkit[ray]'``).

:func:`run_batch` spreads a prompts file (or a Ray Dataset) over actors that each hold one
llmkit instance built from the config. One rate-limiter actor holds the limits for the
whole cluster: every request of every actor reserves its turn there first, and a 429 seen
by any actor pauses all of them (the limiter's arithmetic is :mod:`llmkit.http.ratelimit_state`'s).
Rows are journaled as they arrive in the job file format (:mod:`llmkit.jobs.jobfile`, the
same as ``llmkit.jobs.run`` and ``llmkit batch``), so an interrupted run resumes where it
stopped.

This module imports Ray; ``import llmkit`` does not import this module.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from llmkit.calls.fanout import fan_out
from llmkit.core.config import LLMConfig
from llmkit.core.errors import LLMError
from llmkit.http.ratelimit import Feedback, LimiterState, RateLimitState, Ticket
from llmkit.jobs.errors import JobFileError, SourceError
from llmkit.jobs.job import Job
from llmkit.jobs.jobfile import make_row
from llmkit.jobs.source import JobRow, read_source
from llmkit.registry import _resolve

__all__ = ["BatchResult", "RayLimiterBackend", "run_batch"]

# While the limiter knows no limit (no rate, no pause), an actor may send for this long
# without asking it: the bound on how late a new limit or a pause reaches every actor.
LEASE_SECONDS = 0.1


@ray.remote(num_cpus=0)
class RateLimiterActor:
    """The cluster's one :class:`~llmkit.http.ratelimit_state.LimiterState` (an async
    actor: a caller held behind the first request or by the in-flight window waits here,
    without polling; a pause is handed back to the caller, who raises at once when it is
    longer than its retry cap)."""

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None) -> None:
        self.state = LimiterState(requests_per_minute, tokens_per_minute)

    async def reserve(
        self, tokens: float, retry: bool = False
    ) -> tuple[float, Ticket | None, float, float, float]:
        """``(wait, ticket, lease, paused_for, pause_length)``: while nothing limits the
        cluster, the caller may send for ``lease`` seconds without asking again; without a
        ticket the cluster is paused for ``paused_for`` more seconds."""
        import asyncio

        while True:
            now = time.monotonic()
            wait, ticket = self.state.reserve(tokens, now, retry)
            if ticket is not None:
                return wait, ticket, LEASE_SECONDS if self._unlimited(now) else 0.0, 0.0, 0.0
            learned = self.state.learned
            if now < learned.paused_until:
                return wait, None, 0.0, learned.paused_until - now, learned.pause_length
            await asyncio.sleep(wait)

    def _unlimited(self, now: float) -> bool:
        state, learned = self.state, self.state.learned
        return (
            learned.informed
            and now >= learned.paused_until
            and state.requests.rate is None
            and state.tokens.rate is None
            and learned.rate is None
            and learned.tokens.rate is None
            and learned.overloads == 0
        )

    async def wait_left(self, ticket: Ticket) -> float | None:
        return self.state.wait_left(ticket, time.monotonic())

    async def observe(self, ticket: Ticket | None, feedback: Feedback | None) -> None:
        self.state.observe(ticket, feedback, time.monotonic())

    async def release(self, ticket: Ticket) -> None:
        self.state.release(ticket)

    async def correct(self, ticket: Ticket, tokens: float) -> None:
        self.state.correct(ticket, tokens)

    async def snapshot(self) -> RateLimitState:
        return self.state.snapshot(time.monotonic())

    async def stats(self) -> dict[str, Any]:
        learned = self.state.learned
        return {"pauses": learned.pauses, "requests_rate": learned.rate, "window": learned.window}


class RayLimiterBackend:
    """A :class:`~llmkit.http.ratelimit.RateLimitBackend` that asks a
    :class:`RateLimiterActor`. Answers to leased requests (sent without asking, while
    nothing limits the cluster) that carry nothing about limits are not sent, to keep the
    actor's load low."""

    recheck = 0.5  # seconds between looks at a paced wait (each is a call to the actor)

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self.informed = False
        self.lease_until = 0.0
        self.pause_until = 0.0
        self.pause_length = 0.0

    @property
    def counts_tokens(self) -> bool:
        return True  # the limiter is elsewhere: always send an estimate

    @property
    def paused(self) -> tuple[float, float]:
        return self.pause_until - time.monotonic(), self.pause_length

    async def reserve(self, tokens: float, retry: bool = False) -> tuple[float, Ticket | None]:
        if time.monotonic() < self.lease_until:
            return 0.0, Ticket(0.0, tokens, 0.0, 0.0, -1, estimate=tokens)
        wait, ticket, lease, paused_for, length = await self.actor.reserve.remote(tokens, retry)
        now = time.monotonic()
        if lease:
            self.lease_until = now + lease
        if ticket is None:
            self.pause_until, self.pause_length = now + paused_for, length
        return wait, ticket

    async def wait_left(self, ticket: Ticket) -> float | None:
        left: float | None = await self.actor.wait_left.remote(ticket)
        return left

    def observe(self, ticket: Ticket | None, feedback: Feedback | None) -> None:
        leased = ticket is not None and ticket.epoch < 0
        says_something = feedback is not None and (
            feedback.kind in ("rate", "overload")
            or feedback.requests is not None
            or feedback.tokens is not None
        )
        if says_something or not leased or not self.informed:
            self.informed = True
            if says_something:
                self.lease_until = 0.0  # limits: ask before each request again
            self.actor.observe.remote(None if leased else ticket, feedback)

    def release(self, ticket: Ticket) -> None:
        if ticket.epoch >= 0 and ticket.serial >= 0:
            self.actor.release.remote(ticket)

    def correct(self, ticket: Ticket, tokens: float) -> None:
        if ticket.estimate > 0 and ticket.epoch >= 0:
            self.actor.correct.remote(ticket, tokens)

    def snapshot(self) -> RateLimitState:
        """The cluster's state (asks the limiter actor and waits for its answer)."""
        state: RateLimitState = ray.get(self.actor.snapshot.remote())
        return state


@ray.remote
class BatchWorker:
    """Holds one llmkit instance; answers chunks of prompts into batch records."""

    def __init__(self, config: LLMConfig, limiter: Any, provider: str, model: str) -> None:
        from llmkit.registry import create_llm

        self.llm = create_llm(config)
        self.llm._rate_limiter.backend = RayLimiterBackend(limiter)
        self.provider, self.model = provider, model

    async def run(self, rows: list[JobRow]) -> list[dict[str, Any]]:
        async def answer(row: JobRow) -> Any:
            return await self.llm.chat(row.messages, **row.options)

        results = await fan_out(answer, rows, concurrency=max(1, len(rows)), return_exceptions=True)
        return [make_row(r, self.provider, self.model, "ray", out) for r, out in zip(rows, results, strict=True)]

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        await self.llm.aclose()


@dataclass
class BatchResult:
    """What a run did. ``dataset`` holds the rows when no output file was given."""

    provider: str
    model: str
    total: int
    answered: int
    failed: int
    already_done: int
    seconds: float
    output: Path | None = None
    dataset: Any = None

    def summary(self) -> str:
        return (
            f"{self.provider} {self.model}: {self.answered} answered, {self.failed} failed, "
            f"{self.already_done} already done ({self.total} prompts)"
        )


def _prompts(source: Any) -> list[JobRow]:
    if isinstance(source, str | os.PathLike):
        return read_source(source)
    if hasattr(source, "iter_rows"):  # a ray.data.Dataset: its rows are JSONL rows
        return read_source((dict(row) for row in source.iter_rows()), name="dataset")
    raise SourceError(f"source must be a JSONL path or a Ray Dataset, not {type(source).__name__}")


def _config(config: LLMConfig | dict[str, Any], concurrency: int) -> LLMConfig:
    cfg = config if isinstance(config, LLMConfig) else LLMConfig.for_provider(config)
    # the limits live in the limiter actor; each instance keeps its own in-flight bound
    return cfg.model_copy(
        update={"max_concurrency": concurrency, "requests_per_minute": None, "tokens_per_minute": None}
    )


def _connect(address: str | None) -> bool:
    """Start or join Ray unless already connected; True when this call started it."""
    if ray.is_initialized():
        return False
    if address is None:
        ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    else:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    return True


def run_batch(
    source: str | os.PathLike[str] | Any,
    config: LLMConfig | dict[str, Any],
    *,
    output: str | os.PathLike[str] | None,
    actors: int = 2,
    concurrency_per_actor: int = 16,
    num_gpus_per_actor: float = 0,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    resume: bool = True,
    force: bool = False,
    progress: bool = True,
    address: str | None = None,
    num_cpus_per_actor: float = 0,
) -> BatchResult:
    """Answer every prompt of ``source`` on Ray actors; see the module docstring.

    ``output``: a JSONL file (rows written as they arrive, then sorted by index; with
    ``resume`` the rows already answered are skipped, and a file of another provider,
    model or prompts file is refused unless ``force``), or ``None`` for a Ray Dataset in
    ``BatchResult.dataset``. ``requests_per_minute`` / ``tokens_per_minute`` (default: the
    config's) bind the whole cluster. ``address``: Ray's (``"auto"``, ``"ray://host:10001"``);
    ``None`` joins the Ray already initialised in this process, or starts a local one.
    """
    if actors < 1 or concurrency_per_actor < 1:
        raise JobFileError("actors and concurrency_per_actor must be >= 1")
    user_config = config if isinstance(config, LLMConfig) else LLMConfig.for_provider(config)
    cfg = _config(user_config, concurrency_per_actor)
    rpm = requests_per_minute if requests_per_minute is not None else user_config.requests_per_minute
    tpm = tokens_per_minute if tokens_per_minute is not None else user_config.tokens_per_minute
    provider, model = cfg.provider, cfg.model
    _resolve(provider)  # an unknown provider fails here, not in every actor
    prompts = _prompts(source)
    if not prompts:
        raise SourceError(f"{source if isinstance(source, str | os.PathLike) else 'the dataset'} holds no prompts")
    out_path = Path(output) if output is not None else None
    job = (Job(prompts, out_path, provider=provider, model=model, mode="ray", resume=resume, force=force)
           if out_path is not None else None)
    todo = job.todo() if job is not None else prompts
    started_ray = _connect(address)
    started = time.perf_counter()
    try:
        rows, failed = _run(todo, cfg, provider, model, job, actors, concurrency_per_actor,
                            num_gpus_per_actor, num_cpus_per_actor, rpm, tpm, progress)
    except BaseException:
        if job is not None:
            job.close()
            if job.changed:
                job.finish()  # what the actors answered is kept
        raise
    finally:
        if started_ray:
            ray.shutdown()
    seconds = time.perf_counter() - started
    done = job.already_done if job is not None else 0
    result = BatchResult(provider, model, len(prompts), len(todo) - failed, failed, done, seconds)
    if job is not None:
        job.close()
        job.finish()
        result.output = out_path
    else:
        from ray.data import from_items

        result.dataset = from_items(sorted(rows, key=lambda r: r["index"]))
    return result


def _run(
    todo: Sequence[JobRow],
    cfg: LLMConfig,
    provider: str,
    model: str,
    job: Job | None,
    actors: int,
    concurrency: int,
    num_gpus: float,
    num_cpus: float,
    rpm: float | None,
    tpm: float | None,
    progress: bool,
) -> tuple[list[dict[str, Any]], int]:
    """Send chunks to the actors (two each in flight) and journal rows as they arrive."""
    from tqdm.auto import tqdm

    limiter = RateLimiterActor.remote(rpm, tpm)  # type: ignore[attr-defined]
    workers = [
        BatchWorker.options(  # type: ignore[attr-defined]
            num_cpus=num_cpus, num_gpus=num_gpus, scheduling_strategy="SPREAD"
        ).remote(cfg, limiter, provider, model)
        for _ in range(actors)
    ]
    chunks = deque(list(todo[i : i + concurrency]) for i in range(0, len(todo), concurrency))
    pending: dict[Any, Any] = {}
    started: list[Any] = []

    def submit(worker: Any) -> None:
        if chunks:
            pending[worker.run.remote(chunks.popleft())] = worker

    rows: list[dict[str, Any]] = []
    failed = 0
    bar = tqdm(total=len(todo), desc=f"{provider} batch on ray", unit="req") if progress else None
    # the actors start in parallel; each gets its first two chunks once it is ready, so
    # the first one ready sends while the others are still starting
    starting = {worker.ready.remote(): worker for worker in workers}
    try:
        while pending or (starting and chunks):
            ready, _ = ray.wait([*starting, *pending], num_returns=1)
            if ready[0] in starting:
                worker = starting.pop(ready[0])
                try:
                    ray.get(ready[0])
                except ray.exceptions.RayError as exc:
                    raise LLMError(f"a Ray batch actor failed to start: {type(exc).__name__}: {exc}") from None
                started.append(worker)
                submit(worker)
                submit(worker)
                continue
            worker = pending.pop(ready[0])
            try:
                records: list[dict[str, Any]] = ray.get(ready[0])
            except ray.exceptions.RayError as exc:
                raise LLMError(f"a Ray batch actor failed: {type(exc).__name__}: {exc}") from None
            submit(worker)
            failed += sum("error" in r for r in records)
            if job is not None:
                job.record_rows(records)
            else:
                rows.extend(records)
            if bar is not None:
                bar.update(len(records))
    finally:
        if bar is not None:
            bar.close()
        try:
            ray.get([w.close.remote() for w in started], timeout=30)
        except ray.exceptions.RayError:
            pass
        for actor in [*workers, limiter]:
            ray.kill(actor)
    return rows, failed
