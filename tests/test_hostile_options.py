"""Options nothing may drop silently: the mock provider honours ``stop`` and ``n`` as a
server would and refuses what it cannot give (token probabilities)."""

from __future__ import annotations

import pytest

from llmkit import InvalidRequestError, MockLLM


async def test_mock_honours_stop() -> None:
    llm = MockLLM(responses=["alpha beta. gamma delta"])
    reply = await llm.chat("hi", stop=["."])
    assert (reply.content, reply.finish_reason) == ("alpha beta", "stop")
    assert await llm.generate("hi", stop="gamma") == "alpha beta. "
    assert "".join([d async for d in llm.generate_stream("hi", stop=[" beta"])]) == "alpha"
    assert await llm.generate("hi", stop=["zzz"]) == "alpha beta. gamma delta"


async def test_mock_honours_n() -> None:
    llm = MockLLM(responses=["one two three"])
    reply = await llm.chat("hi", n=3)
    assert [(c.index, c.content, c.finish_reason) for c in reply.choices] == [
        (i, "one two three", "stop") for i in range(3)
    ]
    assert reply.usage.completion_tokens == 9
    single = await llm.chat("hi")
    assert single.usage.completion_tokens == 3


@pytest.mark.parametrize("options", [{"logprobs": True}, {"logprobs": True, "top_logprobs": 2}, {"top_logprobs": 2}])
async def test_mock_refuses_token_probabilities(options: dict[str, object]) -> None:
    llm = MockLLM()
    with pytest.raises(InvalidRequestError, match="logprobs"):
        await llm.chat("hi", **options)
    assert llm.calls == []  # refused before answering
    assert (await llm.chat("hi", logprobs=False)).logprobs is None
