"""Nothing of a finished call stays alive: after many calls of every kind (chat, full
streams, streams abandoned after one chunk, streams cancelled mid-way, embeddings, calls
failing with 500), no response, chunk, reply or error object of those calls is left once
they are done, and the instance's bookkeeping of what is in flight is empty."""

from __future__ import annotations

import asyncio
import gc

import aiohttp

from llmkit import ChatResponse, LLMError, OpenAILLM, ServerError, StreamChunk
from tests.servers import ServerHandle

ROUNDS = 20


def alive(cls: type) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, cls))


async def one_round(llm: OpenAILLM, srv: ServerHandle) -> list[str]:
    ends = []
    ends.append((await llm.chat("hi")).content)
    ends.append("".join([c.delta async for c in llm.chat_stream("a b c d")]))
    ends.append("".join([t async for t in llm.generate_stream("e f g h")]))
    stream = llm.chat_stream("one two three four")
    first = await stream.__anext__()
    await stream.aclose()
    ends.append(f"abandoned after {first.delta!r}")
    srv.state.add_fault("slow_body", after=3, delay=30.0)
    got = asyncio.Event()

    async def consume() -> None:
        n = 0
        async for _ in llm.generate_stream("five six seven eight nine ten"):
            n += 1
            if n == 2:
                got.set()

    task = asyncio.ensure_future(consume())
    await got.wait()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        ends.append("cancelled")
    ends.append(str(len(await llm.embed("vector"))))
    srv.state.add_fault("status", status=500)
    try:
        await llm.generate("fails", max_retries=0)
    except ServerError:
        ends.append("500")
    return ends


async def test_no_call_leaves_anything_behind(openai_server: ServerHandle) -> None:
    async with OpenAILLM(model="gpt-4o-mini", base_url=openai_server.url, api_key="sk-x" * 4,
                         extra={"embedding_model": "text-embedding-3-small"}) as llm:
        first = await one_round(llm, openai_server)  # imports, pool, caches
        assert first[-2:] == [str(openai_server.state.embedding_dim), "500"]
        assert "cancelled" in first
        baseline = {cls: alive(cls) for cls in (aiohttp.ClientResponse, StreamChunk,
                                                ChatResponse, LLMError)}
        for _ in range(ROUNDS):
            assert await one_round(llm, openai_server) == first
        await asyncio.sleep(0.05)  # callbacks of the aborted connections
        after = {cls: alive(cls) for cls in baseline}
        assert after == baseline
        assert not llm._http.inflight._responses
