"""The OpenAI Batch API test server, driven by openai-python (the official client): the
status sequence, failed / expired / cancelled batches, the file line format, shuffled
output, request counts and the limits."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai import AsyncOpenAI, BadRequestError, NotFoundError

from tests.servers import BatchState, FastClock, serve_openai_batch


def _lines(n: int, model: str = "gpt-4o-mini", url: str = "/v1/chat/completions") -> bytes:
    rows = [
        {"custom_id": f"row-{i}", "method": "POST", "url": url,
         "body": {"model": model, "messages": [{"role": "user", "content": f"prompt {i}"}]}}
        for i in range(n)
    ]
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def _parse(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.split("\n") if line]


async def _submit(client: AsyncOpenAI, data: bytes) -> Any:
    f = await client.files.create(file=("in.jsonl", data), purpose="batch")
    assert f.purpose == "batch" and f.bytes == len(data)
    return await client.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
    )


async def test_status_sequence_counts_and_shuffled_output() -> None:
    bs = BatchState(clock=FastClock(speed=0), validating_seconds=10, seconds_per_request=1,
                    finalizing_seconds=10)
    async with serve_openai_batch(batch=bs) as srv:
        client = AsyncOpenAI(base_url=srv.url, api_key="k", max_retries=0)
        batch = await _submit(client, _lines(20))
        seen = [batch.status]
        assert batch.request_counts.total == 0 and batch.output_file_id is None
        for step in (10, 5, 15, 10):
            bs.clock.advance(step)
            got = await client.batches.retrieve(batch.id)
            seen.append(got.status)
            if got.status == "in_progress":
                assert got.request_counts.total == 20
                assert got.request_counts.completed == (5 if step == 5 else got.request_counts.completed)
        assert seen == ["validating", "in_progress", "in_progress", "finalizing", "completed"]
        assert got.request_counts.completed == 20 and got.request_counts.failed == 0
        assert got.error_file_id is None and got.output_file_id is not None
        assert got.usage is not None and got.usage.input_tokens == 40
        out = _parse((await client.files.content(got.output_file_id)).text)
        ids = [o["custom_id"] for o in out]
        assert sorted(ids, key=lambda s: int(s[4:])) == [f"row-{i}" for i in range(20)]
        assert ids != sorted(ids, key=lambda s: int(s[4:]))  # shuffled
        for o in out:
            assert o["response"]["status_code"] == 200 and o["error"] is None
            reply = o["response"]["body"]["choices"][0]["message"]["content"]
            assert reply == f"Echo: prompt {o['custom_id'][4:]}"
        listed = await client.batches.list()
        assert [b.id for b in listed.data] == [batch.id]
        await client.close()


async def test_validation_errors_fail_the_batch_with_line_numbers() -> None:
    bs = BatchState(clock=FastClock(speed=0))
    data = _lines(2) + b'{"custom_id": "x", "method": "POST", \n' + _lines(1)
    async with serve_openai_batch(batch=bs) as srv:
        client = AsyncOpenAI(base_url=srv.url, api_key="k", max_retries=0)
        batch = await _submit(client, data)
        bs.clock.advance(5)
        got = await client.batches.retrieve(batch.id)
        assert got.status == "failed" and got.failed_at is not None
        assert got.errors is not None
        codes = [(e.code, e.line) for e in got.errors.data]
        assert codes == [("invalid_json_line", 3), ("duplicate_custom_id", 4)]
        assert got.output_file_id is None and got.error_file_id is None
        await client.close()


async def test_expired_batch_keeps_what_finished() -> None:
    bs = BatchState(clock=FastClock(speed=0), validating_seconds=0, seconds_per_request=3600)
    async with serve_openai_batch(batch=bs) as srv:
        client = AsyncOpenAI(base_url=srv.url, api_key="k", max_retries=0)
        batch = await _submit(client, _lines(30))
        bs.clock.advance(86400)
        got = await client.batches.retrieve(batch.id)
        assert got.status == "expired" and got.expired_at == batch.expires_at
        assert got.request_counts.completed == 24 and got.request_counts.failed == 0
        assert got.output_file_id and got.error_file_id
        done = _parse((await client.files.content(got.output_file_id)).text)
        left = _parse((await client.files.content(got.error_file_id)).text)
        assert len(done) == 24 and len(left) == 6
        assert {o["custom_id"] for o in done} | {o["custom_id"] for o in left} == {
            f"row-{i}" for i in range(30)}
        for o in left:
            assert o["response"] is None and o["error"]["code"] == "batch_expired"
        # executed in a shuffled order: what finished is not simply the first 24
        assert {o["custom_id"] for o in done} != {f"row-{i}" for i in range(24)}
        await client.close()


async def test_cancel_goes_through_cancelling_and_keeps_partial_results() -> None:
    bs = BatchState(clock=FastClock(speed=0), validating_seconds=0, seconds_per_request=1,
                    cancelling_seconds=60)
    async with serve_openai_batch(batch=bs) as srv:
        client = AsyncOpenAI(base_url=srv.url, api_key="k", max_retries=0)
        batch = await _submit(client, _lines(10))
        bs.clock.advance(4)
        got = await client.batches.cancel(batch.id)
        assert got.status == "cancelling" and got.request_counts.completed == 4
        bs.clock.advance(60)
        got = await client.batches.retrieve(batch.id)
        assert got.status == "cancelled" and got.cancelled_at is not None
        assert len(_parse((await client.files.content(got.output_file_id)).text)) == 4
        rest = _parse((await client.files.content(got.error_file_id)).text)
        assert len(rest) == 6 and {o["error"]["code"] for o in rest} == {"batch_cancelled"}
        with pytest.raises(NotFoundError):
            await client.batches.retrieve("batch_nope")
        await client.close()


async def test_all_failed_has_no_output_file() -> None:
    bs = BatchState(clock=FastClock(speed=0), validating_seconds=0, seconds_per_request=0,
                    finalizing_seconds=0)
    bs.line_status.update({f"row-{i}": 500 for i in range(3)})
    async with serve_openai_batch(batch=bs) as srv:
        client = AsyncOpenAI(base_url=srv.url, api_key="k", max_retries=0)
        batch = await _submit(client, _lines(3))
        got = await client.batches.retrieve(batch.id)
        assert got.status == "completed" and got.output_file_id is None
        assert got.request_counts.failed == 3
        errs = _parse((await client.files.content(got.error_file_id)).text)
        assert {o["response"]["status_code"] for o in errs} == {500}
        assert all(o["response"]["body"]["error"]["type"] == "server_error" for o in errs)
        await client.close()


async def test_limits_are_enforced() -> None:
    bs = BatchState(clock=FastClock(speed=0), validating_seconds=0, max_requests=3,
                    max_file_bytes=2000)
    async with serve_openai_batch(batch=bs) as srv:
        client = AsyncOpenAI(base_url=srv.url, api_key="k", max_retries=0)
        batch = await _submit(client, _lines(4))
        got = await client.batches.retrieve(batch.id)
        assert got.status == "failed"
        assert got.errors is not None and [e.code for e in got.errors.data] == ["too_many_tasks"]
        with pytest.raises(BadRequestError, match="too large"):
            await client.files.create(file=("big.jsonl", _lines(30)), purpose="batch")
        with pytest.raises(BadRequestError, match="jsonl"):
            await client.files.create(file=("in.txt", _lines(1)), purpose="batch")
        await client.close()


async def test_lines_split_only_on_newline() -> None:
    """A raw U+2028 inside a JSON string is one line, as JSONL says."""
    bs = BatchState(clock=FastClock(speed=0), validating_seconds=0, seconds_per_request=0,
                    finalizing_seconds=0)
    row = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
           "body": {"model": "m", "messages": [{"role": "user", "content": "x\u2028y\u0085z"}]}}
    async with serve_openai_batch(batch=bs) as srv:
        client = AsyncOpenAI(base_url=srv.url, api_key="k", max_retries=0)
        batch = await _submit(client, json.dumps(row, ensure_ascii=False).encode() + b"\n")
        got = await client.batches.retrieve(batch.id)
        assert got.status == "completed"
        raw = (await client.files.content(got.output_file_id)).content
        assert raw.count(b"\n") == 1 and "x\u2028y\u0085z".encode() in raw
        await client.close()


async def test_files_list_retrieve_delete(openai_batch_server: Any) -> None:
    srv = openai_batch_server
    client = AsyncOpenAI(base_url=srv.url, api_key="k", max_retries=0)
    f = await client.files.create(file=("a.jsonl", _lines(2)), purpose="batch")
    assert (await client.files.retrieve(f.id)).filename == "a.jsonl"
    assert [x.id for x in (await client.files.list(purpose="batch")).data] == [f.id]
    assert (await client.files.content(f.id)).content == _lines(2)
    assert (await client.files.delete(f.id)).deleted is True
    with pytest.raises(NotFoundError):
        await client.files.content(f.id)
    with pytest.raises(BadRequestError, match="input_file_id"):
        await client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                    completion_window="24h")
    await client.close()
