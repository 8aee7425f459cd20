"""What llama.cpp's server returns reaches the caller: every choice of ``n > 1`` (a stream
interleaves them: chunks are routed by choice index), per-token logprobs in streams, the
prompt-cache count, the normalised finish reason and the server's context length."""

from __future__ import annotations

from typing import Any

from llmkit import LLMConfig, OpenAILLM
from tests.conformance.llama_server import LlamaServer

GREEDY: dict[str, Any] = {"temperature": 0.0, "max_tokens": 12}


def llm_for(server: LlamaServer) -> OpenAILLM:
    # No retries: a request that meets a connection llama-server closed after a stream is
    # resent by the transport itself (test_llama_openai checks that on its own).
    return OpenAILLM(LLMConfig(provider="openai", model="tiny-chat", base_url=server.url + "/v1",
                               timeout=30.0, max_retries=0))


async def test_n_choices_and_streams_routed_by_index(llama_chat: LlamaServer) -> None:
    async with llm_for(llama_chat) as llm:
        whole = await llm.chat("Two answers, please.", n=2, **GREEDY)
        chunks = [c async for c in llm.chat_stream("Two answers, please.", n=2, **GREEDY)]
        text = "".join([d async for d in llm.generate_stream("Two answers, please.", n=2, **GREEDY)])
    assert [c.index for c in whole.choices] == [0, 1]
    assert whole.content == whole.choices[0].content and whole.content
    streamed = {i: "".join(c.delta for c in chunks if c.index == i) for i in (0, 1)}
    assert streamed == {0: whole.choices[0].content, 1: whole.choices[1].content}
    assert text == whole.choices[0].content  # choice 0 only, the other not mixed in
    assert sorted(c.index for c in chunks if c.finish_reason) == [0, 1]
    assert {c.finish_reason for c in chunks if c.finish_reason} == {"length"}


async def test_stream_logprobs_per_chunk(llama_chat: LlamaServer) -> None:
    async with llm_for(llama_chat) as llm:
        chunks = [c async for c in llm.chat_stream("Log my probabilities.", logprobs=True,
                                                   top_logprobs=2, **GREEDY)]
    entries = [t for c in chunks if c.logprobs for t in c.logprobs]
    assert len(entries) == 12
    assert all(len(t["top_logprobs"]) == 2 and t["logprob"] <= 0 for t in entries)
    assert "".join(c.delta for c in chunks) == "".join(t["token"] for t in entries)


async def test_cached_prompt_tokens_counted(llama_chat: LlamaServer) -> None:
    prompt = "The same long prompt, sent twice so that the server reuses its cache. " * 4
    async with llm_for(llama_chat) as llm:
        await llm.chat(prompt, **GREEDY)
        again = await llm.chat(prompt, **GREEDY)
    details = again.raw["usage"].get("prompt_tokens_details") or {}
    assert again.usage.cached_tokens == details.get("cached_tokens") > 0


async def test_fetch_model_info_reads_the_server(llama_chat: LlamaServer) -> None:
    props = llama_chat.get_json("/props")
    assert isinstance(props, dict)
    async with llm_for(llama_chat) as llm:
        assert llm.get_model_info().context_length is None  # not known before asking
        info = await llm.fetch_model_info()
    assert info.context_length == props["default_generation_settings"]["n_ctx"]
