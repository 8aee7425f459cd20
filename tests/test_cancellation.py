"""A task cancelled while a stream waits for the end of its body is cancelled: the wait
does not swallow the cancellation when the read completes in the same step (what
``asyncio.wait_for`` does before Python 3.12)."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp.base_protocol import BaseProtocol

from llmkit.http.bodies import await_body_end


@asynccontextmanager
async def body_reader() -> AsyncIterator[aiohttp.StreamReader]:
    """A response body as aiohttp reads it, on a connected socket pair (the test feeds
    the body's bytes itself, so it decides in which loop step they arrive)."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    transport, protocol = await loop.connect_accepted_socket(lambda: BaseProtocol(loop), ours)
    try:
        yield aiohttp.StreamReader(protocol, 2**16, loop=loop)
    finally:
        transport.close()
        theirs.close()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Python 3.10 has only asyncio.wait_for")
async def test_cancel_as_the_body_ends_is_not_swallowed() -> None:
    async with body_reader() as reader:
        await cancel_at_the_body_end(reader)


async def cancel_at_the_body_end(reader: aiohttp.StreamReader) -> None:
    steps: list[str] = []

    async def after_end_marker() -> None:
        await await_body_end(SimpleNamespace(content=reader))  # type: ignore[arg-type]
        steps.append("ran on")

    task = asyncio.ensure_future(after_end_marker())
    await asyncio.sleep(0)  # the task waits for the body's end
    reader.feed_data(b"0\r\n\r\n")
    await asyncio.sleep(0)  # the read completes; the waiting task is not resumed yet
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps == [] and task.cancelled()


async def test_the_body_end_is_still_awaited_and_bounded() -> None:
    async with body_reader() as reader:
        reader.feed_data(b"tail")
        reader.feed_eof()
        await await_body_end(SimpleNamespace(content=reader))  # type: ignore[arg-type]
        assert reader.at_eof()
    async with body_reader() as open_reader:
        await await_body_end(SimpleNamespace(content=open_reader))  # the grace time, then back
        assert not open_reader.at_eof()
