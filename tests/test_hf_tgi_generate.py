"""HuggingFaceLLM against TGI's own API: ``/generate`` and ``/generate_stream`` (prompt
template, parameters, stop sequences, streaming), and the detection of TGI behind a
``base_url`` (``/info`` probed once)."""

from __future__ import annotations

import asyncio

import pytest

from llmkit.core.errors import InvalidRequestError, NotSupportedError, StreamError
from llmkit.providers.huggingface.client import HuggingFaceLLM
from tests.servers import ServerHandle
from tests.test_huggingface import TOKEN, get_weather, make

# --------------------------------------------------------------------------- TGI /generate


async def test_tgi_generate_parameters_and_stop(tgi_server: ServerHandle) -> None:
    tgi_server.state.reply = "The answer is 42. User: and more"
    async with make(tgi_server, api="tgi") as llm:
        response = await llm.chat(
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Question?"}],
            temperature=0,
            max_tokens=20,
            stop=["User:"],
            seed=7,
        )
        await llm.generate("sample", temperature=0.7, top_p=1.0)
        await llm.generate("sample", temperature=0.7, top_p=0.9)
    assert response.content == "The answer is 42. "
    assert response.finish_reason == "stop"
    assert response.usage.completion_tokens > 0
    greedy, sampled, nucleus = (r.json for r in tgi_server.state.requests_to("/generate"))
    assert greedy["inputs"] == "System: Be brief.\n\nUser: Question?\n\nAssistant:"
    assert greedy["parameters"] == {
        "max_new_tokens": 20,
        "details": True,
        "decoder_input_details": True,
        "do_sample": False,
        "stop": ["User:"],
        "seed": 7,
    }
    assert sampled["parameters"]["do_sample"] is True
    assert sampled["parameters"]["temperature"] == 0.7
    assert "top_p" not in sampled["parameters"]  # TGI rejects top_p == 1.0
    assert nucleus["parameters"]["top_p"] == 0.9


async def test_tgi_generate_length_and_validation_errors(tgi_server: ServerHandle) -> None:
    tgi_server.state.reply = "a b c d e f g h"
    async with make(tgi_server, api="tgi") as llm:
        response = await llm.chat("hi", max_tokens=3, temperature=0)
        with pytest.raises(InvalidRequestError, match="stop"):
            await llm.generate("hi", stop=["1", "2", "3", "4", "5"])
        with pytest.raises(NotSupportedError):
            await llm.chat("hi", tools=[get_weather])
    assert response.content == "a b c"
    assert response.finish_reason == "length"
    assert response.usage.completion_tokens == 3


async def test_tgi_generate_stream(tgi_server: ServerHandle) -> None:
    tgi_server.state.reply = "Hello there friend. STOP ignored words"
    async with make(tgi_server, api="tgi") as llm:
        chunks = [c async for c in llm.chat_stream("hi", stop=["STOP"], temperature=0)]
        plain = [d async for d in llm.generate_stream("hi", temperature=0)]
        usage = llm.get_token_usage()
    text = "".join(c.delta for c in chunks)
    assert text == "Hello there friend. "
    assert not any("STOP" in c.delta for c in chunks)
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0
    assert len(plain) > 3
    assert "".join(plain) == "Hello there friend. STOP ignored words"
    assert usage.completion_tokens > 0
    reqs = tgi_server.state.requests_to("/generate_stream")
    assert len(reqs) == 2 and reqs[0].json["parameters"]["details"] is True


async def test_tgi_truncated_stream_raises(tgi_server: ServerHandle) -> None:
    tgi_server.state.reply = "one two three four five six"
    tgi_server.state.add_fault("truncate_stream", path="/generate_stream", after=2)
    got: list[str] = []
    async with make(tgi_server, api="tgi", max_retries=0) as llm:
        with pytest.raises(StreamError, match="truncated"):
            async for delta in llm.generate_stream("hi"):
                got.append(delta)
    assert "".join(got) == "one two"


async def test_tgi_error_event_raises(tgi_server: ServerHandle) -> None:
    tgi_server.state.reply = "one two three four"
    tgi_server.state.add_fault(
        "error_event", path="/generate_stream", after=1, message="CUDA out of memory"
    )
    got: list[str] = []
    async with make(tgi_server, api="tgi", max_retries=0) as llm:
        with pytest.raises(StreamError, match="CUDA out of memory") as info:
            async for delta in llm.generate_stream("hi"):
                got.append(delta)
    assert info.value.status is None
    assert got == ["one"]


# --------------------------------------------------------------------------- TGI auto-detect


async def test_tgi_auto_detect_probes_info_once(tgi_server: ServerHandle) -> None:
    llm = make(tgi_server, api=None)  # base_url is not the router: "auto"
    async with llm:
        replies = await asyncio.gather(*(llm.generate(f"q{i}") for i in range(5)))
        await llm.generate("again")
        info = llm.get_model_info()
        await llm.health_check()
    assert replies == [f"Echo: q{i}" for i in range(5)]
    assert len(tgi_server.state.requests_to("/info", "GET")) == 1
    assert len(tgi_server.state.requests_to("/v1/chat/completions")) == 6
    assert tgi_server.state.requests_to("/generate") == []
    assert info.details["api"] == "tgi-chat"
    assert info.context_length == tgi_server.state.context_length + 1024
    assert len(tgi_server.state.requests_to("/health", "GET")) == 1


async def test_auto_on_plain_openai_server(openai_server: ServerHandle) -> None:
    llm = HuggingFaceLLM(model="gpt-4o-mini", base_url=openai_server.url, api_key=TOKEN)
    async with llm:
        text = await llm.generate("hello")
        await llm.generate("again")
    assert text == "Echo: hello"
    assert [r.path for r in openai_server.state.requests] == [
        "/info",
        "/v1/chat/completions",
        "/v1/chat/completions",
    ]
    assert llm.get_model_info().details["api"] == "openai"


async def test_tgi_chat_explicit_reads_info_once_for_limits(tgi_server: ServerHandle) -> None:
    async with make(tgi_server, api="tgi-chat") as llm:
        assert await llm.generate("x") == "Echo: x"
        assert await llm.generate("y") == "Echo: y"
        assert llm.get_model_info().details["api"] == "tgi-chat"
    paths = [r.path for r in tgi_server.state.requests]
    assert paths == ["/info", "/v1/chat/completions", "/v1/chat/completions"]
