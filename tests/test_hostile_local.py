"""Local mode and the portable options: each one is honoured (its effect shows in the
reply) or refused with :class:`InvalidRequestError` before anything runs (the model is
not even loaded). Nothing is accepted and dropped."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest

from llmkit import ConfigError, InvalidRequestError, LLMTimeoutError, StreamError
from llmkit.providers.huggingface import HuggingFaceLLM
from tests.local_models import build_tiny_llama

pytestmark = pytest.mark.local

GREEDY: dict[str, Any] = {"temperature": 0.0, "max_tokens": 16}
PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-options")))


def local(model: str) -> HuggingFaceLLM:
    return HuggingFaceLLM(model=model, base_url="local", extra={"device": "cpu"})


@pytest.fixture
async def llm(tiny_model: str) -> AsyncIterator[HuggingFaceLLM]:
    async with local(tiny_model) as instance:
        yield instance


# --------------------------------------------------------------------------- refused


REFUSED: list[tuple[str, Any]] = [
    ("reasoning_effort", "low"),
    ("think", True),
    # provider options of the API modes that local mode has no use for
    ("logit_bias", {"12": 5}),
    ("repetition_penalty", 1.3),
    ("typical_p", 0.5),
    ("best_of", 2),
    ("watermark", True),
    ("user", "someone"),
    # client options for an HTTP request that local mode does not make
    ("extra_body", {"x": 1}),
    ("extra_headers", {"X-Trace": "1"}),
]


@pytest.mark.parametrize(("name", "value"), REFUSED)
@pytest.mark.parametrize("call", ["generate", "chat", "generate_stream", "chat_stream", "batch_generate"])
async def test_options_local_mode_cannot_honour_are_refused_before_running(
    tiny_model: str, name: str, value: Any, call: str
) -> None:
    async with local(tiny_model) as llm:
        with pytest.raises(InvalidRequestError) as info:
            if call.endswith("stream"):
                async for _ in getattr(llm, call)(PROMPT, **{name: value}):
                    pass
            elif call == "batch_generate":
                await llm.batch_generate([PROMPT, "Hello"], **{name: value})
            else:
                await getattr(llm, call)(PROMPT, **{name: value})
        assert repr(name) in info.value.message and "local mode" in info.value.message
        assert llm.get_model_info().details["loaded"] is False  # nothing ran
        assert llm.get_token_usage().completion_tokens == 0


async def test_n_above_one_is_refused_for_streams(tiny_model: str) -> None:
    async with local(tiny_model) as llm:
        with pytest.raises(InvalidRequestError, match="'n'"):
            async for _ in llm.chat_stream(PROMPT, n=2):
                pass
        assert llm.get_model_info().details["loaded"] is False


# --------------------------------------------------------------------------- honoured


async def test_max_tokens_stop_and_temperature(llm: HuggingFaceLLM) -> None:
    full = await llm.chat(PROMPT, **GREEDY)
    assert full.usage.completion_tokens <= 16
    short = await llm.chat(PROMPT, temperature=0.0, max_tokens=3)
    assert short.usage.completion_tokens <= 3 and short.finish_reason in ("length", "stop")
    assert full.content.startswith(short.content)
    if len(full.content) > 4:
        stop = full.content[2:4]
        cut = await llm.chat(PROMPT, stop=stop, **GREEDY)
        assert stop not in cut.content and full.content.startswith(cut.content)
        assert cut.finish_reason == "stop"


async def test_seed_makes_sampling_reproducible(llm: HuggingFaceLLM) -> None:
    opts = {"temperature": 1.5, "max_tokens": 16}
    a = await llm.generate(PROMPT, seed=7, **opts)
    b = await llm.generate(PROMPT, seed=7, **opts)
    others = {await llm.generate(PROMPT, seed=s, **opts) for s in range(8, 14)}
    assert a == b
    assert len(others | {a}) > 1  # other seeds sample other replies


async def test_top_p_tiny_is_greedy(llm: HuggingFaceLLM) -> None:
    greedy = await llm.generate(PROMPT, **GREEDY)
    for seed in range(4):
        assert await llm.generate(PROMPT, temperature=1.5, top_p=1e-6, seed=seed, max_tokens=16) == greedy


async def test_top_k_one_is_greedy_at_any_temperature(llm: HuggingFaceLLM) -> None:
    greedy = await llm.generate(PROMPT, **GREEDY)
    sampled = {await llm.generate(PROMPT, temperature=2.0, seed=s, max_tokens=16) for s in range(6)}
    assert sampled != {greedy}  # without top_k, temperature 2 wanders off
    for seed in range(6):
        assert await llm.generate(PROMPT, temperature=2.0, top_k=1, seed=seed, max_tokens=16) == greedy
    # top_k=0 means no limit (as in transformers and vLLM)
    assert await llm.generate(PROMPT, top_k=0, **GREEDY) == greedy


async def _generated(llm: HuggingFaceLLM, **options: Any) -> list[str]:
    """The generated tokens (their texts, from the reply's logprobs)."""
    reply = await llm.chat(PROMPT, logprobs=True, temperature=0.0, max_tokens=40, **options)
    assert reply.logprobs is not None
    return [entry["token"] for entry in reply.logprobs]


async def test_frequency_and_presence_penalties_reduce_repetition(llm: HuggingFaceLLM) -> None:
    plain = await _generated(llm)
    assert len(set(plain)) < len(plain), "the tiny model should repeat itself unpenalised"
    for name in ("frequency_penalty", "presence_penalty"):
        penalised = await _generated(llm, **{name: 2.0})
        assert penalised != plain
        assert len(set(penalised)) > len(set(plain)), name  # more distinct tokens
        # a negative penalty encourages repetition
        encouraged = await _generated(llm, **{name: -2.0})
        assert len(set(encouraged)) < len(set(plain)), name


async def test_n_gives_n_choices(llm: HuggingFaceLLM) -> None:
    greedy = await llm.chat(PROMPT, **GREEDY)
    three = await llm.chat(PROMPT, n=3, **GREEDY)
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert [c.content for c in three.choices] == [greedy.content] * 3
    assert three.content == greedy.content
    assert three.usage.completion_tokens == 3 * greedy.usage.completion_tokens
    assert three.usage.prompt_tokens == greedy.usage.prompt_tokens
    sampled = await llm.chat(PROMPT, n=4, temperature=1.5, seed=3, max_tokens=16)
    assert len({c.content for c in sampled.choices}) > 1  # each choice samples its own
    again = await llm.chat(PROMPT, n=4, temperature=1.5, seed=3, max_tokens=16)
    assert [c.content for c in again.choices] == [c.content for c in sampled.choices]
    one = await llm.chat(PROMPT, n=1, **GREEDY)
    assert one.content == greedy.content


async def test_logprobs_and_top_logprobs(llm: HuggingFaceLLM) -> None:
    plain = await llm.chat(PROMPT, **GREEDY)
    assert plain.logprobs is None
    reply = await llm.chat(PROMPT, logprobs=True, top_logprobs=3, **GREEDY)
    assert reply.content == plain.content
    entries = reply.logprobs
    assert entries is not None
    # one entry a generated token (the end-of-sequence token, when it ends the reply, has none)
    assert len(entries) in (reply.usage.completion_tokens, reply.usage.completion_tokens - 1)
    assert len(entries) > 0
    for entry in entries:
        assert entry["logprob"] <= 0.0 and math.isfinite(entry["logprob"])
        assert isinstance(entry["token"], str) and isinstance(entry["bytes"], list)
        tops = entry["top_logprobs"]
        assert len(tops) == 3
        assert [t["logprob"] for t in tops] == sorted((t["logprob"] for t in tops), reverse=True)
        # greedy: the chosen token is the most likely one
        assert tops[0]["logprob"] == pytest.approx(entry["logprob"], abs=1e-5)
    only = await llm.chat(PROMPT, logprobs=True, **GREEDY)
    assert only.logprobs is not None and all(e["top_logprobs"] == [] for e in only.logprobs)
    chunks = [c async for c in llm.chat_stream(PROMPT, logprobs=True, top_logprobs=2, **GREEDY)]
    streamed = [e for c in chunks if c.logprobs for e in c.logprobs]
    assert [e["token"] for e in streamed] == [e["token"] for e in entries]
    assert all(len(e["top_logprobs"]) == 2 for e in streamed)
    with pytest.raises(InvalidRequestError, match="top_logprobs"):
        await llm.chat(PROMPT, top_logprobs=2, **GREEDY)  # needs logprobs=True, as OpenAI says


async def test_timeout_limits_a_local_call(llm: HuggingFaceLLM) -> None:
    long_prompt = PROMPT * 60
    with pytest.raises(LLMTimeoutError, match="timed out"):
        await llm.generate(long_prompt, timeout=0.001, temperature=0.0, max_tokens=200)
    with pytest.raises(LLMTimeoutError):
        async for _ in llm.generate_stream(long_prompt, timeout=0.001, temperature=0.0, max_tokens=200):
            pass
    assert await llm.generate(PROMPT, timeout=60, **GREEDY)  # reusable, and a generous limit holds


async def test_close_during_a_local_stream_and_call_ends_them(tiny_model: str) -> None:
    """As over HTTP: a stream in flight ends with a StreamError saying the instance was
    closed, a call with ConfigError("instance is closed"); both at once."""
    llm = local(tiny_model)
    deltas: list[str] = []

    async def consume() -> None:
        async for delta in llm.generate_stream(PROMPT * 10, temperature=0.0, max_tokens=1500):
            deltas.append(delta)

    stream_task = asyncio.create_task(consume())
    call_task = asyncio.create_task(llm.generate(PROMPT * 10, temperature=0.0, max_tokens=1500))
    while not deltas:  # noqa: ASYNC110 - a condition on another task's state
        await asyncio.sleep(0.005)
    await llm.aclose()
    with pytest.raises(StreamError, match="instance was closed"):
        await asyncio.wait_for(stream_task, 30)
    with pytest.raises(ConfigError, match="instance is closed"):
        await asyncio.wait_for(call_task, 30)


async def test_a_failed_choice_cancels_the_other_choices(tiny_model: str) -> None:
    """``chat(n=3)``: when one choice's generation fails, the call fails at once and the
    other choices are not generated for nobody (one row decodes at a time here, so they
    are still queued when the first fails)."""
    import torch.nn.modules.module as torch_modules

    passes: list[str] = []
    fail_next = False

    def count_model_passes(module: Any, args: Any) -> None:
        nonlocal fail_next
        if type(module).__name__.endswith("ForCausalLM"):
            if fail_next:
                fail_next = False
                raise RuntimeError("device lost")
            passes.append("pass")

    async with HuggingFaceLLM(
        model=tiny_model, base_url="local", extra={"device": "cpu", "max_batch_size": 1}
    ) as llm:
        hook = torch_modules.register_module_forward_pre_hook(count_model_passes)
        try:
            await llm.chat(PROMPT, temperature=0.0, max_tokens=4)
            one_call = len(passes)
            assert one_call > 0
            passes.clear()
            fail_next = True
            with pytest.raises(Exception, match="device lost"):
                await llm.chat(PROMPT, n=3, temperature=0.0, max_tokens=16)
            # the engine takes requests in order: once this call is answered, whatever of
            # the failed call was still queued would have run before it
            await llm.chat(PROMPT, temperature=0.0, max_tokens=4)
        finally:
            hook.remove()
    # the next choice may have had its first pass before the cancellation reached the
    # engine's thread; generated whole, the two others would take some 30 passes
    assert one_call <= len(passes) <= one_call + 1
