"""Security properties: API keys never leak, redirects do not carry credentials to another
origin, TLS is verified by default, configuration loading is safe, local Hugging Face
models do not run remote code by default, and the error mapper and stream parsers hold up
against arbitrary input (hypothesis)."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import math
import ssl
import traceback
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from llmkit import (
    AuthenticationError,
    BaseLLM,
    ConfigError,
    HuggingFaceLLM,
    LLMConfig,
    LLMConnectionError,
    LLMError,
    OllamaLLM,
    OpenAILLM,
    RateLimitError,
    ServerError,
    StreamError,
    load_config,
)
from llmkit.core.types import ChatResponse, StreamChunk
from llmkit.http.error_mapping import error_from_response
from llmkit.http.streaming import NDJSONParser, SSEEvent, SSEParser
from llmkit.providers.ollama.client import _checked
from llmkit.providers.openai.chat import parse_chat_response, parse_stream_event
from tests.servers import ServerHandle, ServerState, serve_hf, serve_ollama, serve_openai
from tests.servers.openai_server import make_openai_app

FAST_RETRY = {"retry_initial_delay": 0.01, "retry_max_delay": 0.05}


def new_key(shape: str = "plain") -> str:
    """A fresh key per test: ``plain`` keys match no key pattern, so only the library's
    registration of the configured key can keep them out of text."""
    token = uuid.uuid4().hex
    if shape == "openai":
        return f"sk-proj-{token}"
    if shape == "hf":
        return f"hf_{token}"
    return f"Zq{token[:6]}-private-{token[6:18]}"


@dataclass(frozen=True)
class Provider:
    name: str
    serve: Callable[[ServerState], AbstractAsyncContextManager[ServerHandle]]
    cls: type[BaseLLM]
    model: str
    chat_path: str
    extra: dict[str, Any]

    def make(self, url: str, key: str, **kw: Any) -> BaseLLM:
        extra = {**FAST_RETRY, **self.extra, **kw.pop("extra", {})}
        return self.cls(
            LLMConfig(provider=self.name, model=self.model, base_url=url, api_key=key,
                      timeout=2.0, extra=extra, **kw)
        )

    def auth_body(self, key: str) -> dict[str, Any]:
        """A 401 body that echoes the key in full (as some gateways do)."""
        text = f"Incorrect API key provided: {key}. Authorization: Bearer {key}"
        if self.name == "openai":
            return {"error": {"message": text, "type": "invalid_request_error",
                              "param": None, "code": "invalid_api_key"}}
        return {"error": text}


PROVIDERS = {
    "openai": Provider("openai", serve_openai, OpenAILLM, "gpt-4o-mini",
                       "/v1/chat/completions", {}),
    "ollama": Provider("ollama", serve_ollama, OllamaLLM, "llama3.2", "/api/chat", {}),
    "huggingface": Provider("huggingface", serve_hf, HuggingFaceLLM,
                            "meta-llama/Llama-3.1-8B-Instruct", "/v1/chat/completions",
                            {"api": "router"}),
}
provider_names = pytest.mark.parametrize("provider", list(PROVIDERS))


def assert_no_key(key: str, *texts: str) -> None:
    for text in texts:
        assert key not in text, f"API key leaked in: {text[:500]!r}"
        # nor a large part of it
        assert key[-12:] not in text, f"API key tail leaked in: {text[:500]!r}"


def error_texts(exc: BaseException) -> list[str]:
    return [
        str(exc),
        repr(exc),
        "".join(traceback.format_exception(exc)),
        repr(vars(exc)),
    ]


# --------------------------------------------------------------------------- API keys


@pytest.mark.parametrize("shape", ["plain", "openai", "hf"])
def test_key_not_in_config_str_repr_or_dumps(shape: str) -> None:
    key = new_key(shape)
    config = LLMConfig(provider="openai", model="gpt-4o-mini", api_key=key)
    assert config.key() == key  # still usable
    assert_no_key(
        key,
        str(config),
        repr(config),
        repr(config.model_dump()),
        config.model_dump_json(),
        repr(config.api_key),
        str(config.api_key),
    )


@provider_names
async def test_key_not_in_provider_repr_info_or_metrics(provider: str) -> None:
    spec = PROVIDERS[provider]
    key = new_key()
    async with spec.serve(ServerState()) as srv:
        async with spec.make(srv.url, key) as llm:
            assert await llm.generate("hi") == "Echo: hi"
            assert srv.state.last_request.authorization == f"Bearer {key}"
            assert_no_key(
                key,
                str(llm),
                repr(llm),
                repr(llm.config),
                llm.get_model_info().model_dump_json(),
                repr(llm.get_model_info()),
                llm.get_metrics().model_dump_json(),
                repr(llm.get_metrics()),
            )


@provider_names
async def test_key_echoed_in_401_body_is_redacted(provider: str) -> None:
    spec = PROVIDERS[provider]
    key = new_key()
    async with spec.serve(ServerState()) as srv:
        srv.state.add_fault("status", status=401, body=spec.auth_body(key), path=spec.chat_path)
        async with spec.make(srv.url, key) as llm:
            with pytest.raises(AuthenticationError) as info:
                await llm.generate("hi")
            err = info.value
            assert err.status == 401 and "Incorrect API key provided" in err.message
            assert "***" in err.message
            assert_no_key(key, *error_texts(err))
            assert srv.state.request_count == 1  # 401 is not retried


@provider_names
async def test_key_not_in_debug_logs_with_retries(
    provider: str, caplog: pytest.LogCaptureFixture
) -> None:
    spec = PROVIDERS[provider]
    key = new_key()
    caplog.set_level(logging.DEBUG)  # everything: llmkit, aiohttp, asyncio
    caplog.set_level(logging.DEBUG, logger="llmkit")
    async with spec.serve(ServerState()) as srv:
        srv.state.add_fault("status", status=503, body=spec.auth_body(key), path=spec.chat_path)
        srv.state.add_fault("status", status=429, headers={"retry-after-ms": "10"},
                            path=spec.chat_path)
        async with spec.make(srv.url, key) as llm:
            assert await llm.generate("hi") == "Echo: hi"
            assert llm.get_metrics().retries == 2
    llmkit_records = [r for r in caplog.records if r.name.startswith("llmkit")]
    assert any("retry" in r.getMessage() for r in llmkit_records), caplog.text
    assert_no_key(key, caplog.text, *(repr(r.__dict__) for r in caplog.records))


@provider_names
async def test_everything_captured_has_no_key(
    provider: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
    refused_url: str,
) -> None:
    """Drive successes, retries, auth failures, stream errors and connection failures,
    print what a user would print, then grep every captured byte for the key."""
    spec = PROVIDERS[provider]
    key = new_key()
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    async with spec.serve(ServerState()) as srv:
        state = srv.state
        async with spec.make(srv.url, key, max_retries=1) as llm:
            print(llm, llm.config, llm.get_model_info())
            state.add_fault("status", status=500, body=spec.auth_body(key), path=spec.chat_path)
            print(await llm.generate("one"))
            state.add_fault("status", status=401, body=spec.auth_body(key), path=spec.chat_path)
            state.add_fault("status", status=429, body=spec.auth_body(key), times=2,
                            path=spec.chat_path)
            state.add_fault("error_event", message=f"bad token {key}", after=1,
                            path=spec.chat_path)
            for call in (
                lambda: llm.generate("two"),
                lambda: llm.generate("three"),
                lambda: _drain(llm.generate_stream("four")),
            ):
                try:
                    await call()
                except LLMError as exc:
                    errors.append(exc)
                    print("error:", exc, repr(exc))
                    logging.getLogger("llmkit.test").exception("call failed")
            print(llm.get_metrics().model_dump())
        refused = spec.make(refused_url + ("/v1" if provider == "openai" else ""), key,
                            max_retries=0)
        async with refused:
            try:
                await refused.generate("five")
            except LLMError as exc:
                errors.append(exc)
                print("error:", exc)
    assert [type(e) for e in errors] == [
        AuthenticationError, RateLimitError, StreamError, LLMConnectionError,
    ]
    out, err = capsys.readouterr()
    blob = "\n".join([out, err, caplog.text, *(t for e in errors for t in error_texts(e))])
    assert "Echo: one" in blob and "retry" in blob  # the capture did capture things
    assert_no_key(key, blob)


async def _drain(gen: Any) -> None:
    async with aclosing(gen) as items:
        async for _ in items:
            pass


# --------------------------------------------------------------------------- redirects


async def _serve_app(app: web.Application, host: str = "127.0.0.1",
                     ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=ssl_context)
    await site.start()
    return runner, runner.addresses[0][1]


@provider_names
async def test_authorization_not_forwarded_to_other_origin_on_redirect(provider: str) -> None:
    spec = PROVIDERS[provider]
    key = new_key("openai")
    async with spec.serve(ServerState()) as a, spec.serve(ServerState()) as b:
        port_b = b.base_url.rsplit(":", 1)[1]
        # Same host, another port and another host name: a different origin.
        target = f"http://localhost:{port_b}{spec.chat_path}"
        a.state.add_fault("status", status=307, body=b"", headers={"Location": target},
                          path=spec.chat_path)
        async with spec.make(a.url, key) as llm:
            assert await llm.generate("hello") == "Echo: hello"
        assert a.state.last_request.authorization == f"Bearer {key}"
        assert b.state.request_count == 1
        assert b.state.last_request.path == spec.chat_path
        assert b.state.last_request.authorization is None
        assert all(key not in v for v in b.state.last_request.headers.values())


@provider_names
async def test_authorization_kept_on_same_origin_redirect(provider: str) -> None:
    spec = PROVIDERS[provider]
    key = new_key("openai")
    async with spec.serve(ServerState()) as a:
        a.state.add_fault("status", status=307, body=b"", path=spec.chat_path,
                          headers={"Location": f"{a.base_url}{spec.chat_path}?moved=1"})
        async with spec.make(a.url, key) as llm:
            assert await llm.generate("hello") == "Echo: hello"
        assert a.state.request_count == 2
        assert a.state.last_request.query == {"moved": "1"}
        assert a.state.last_request.authorization == f"Bearer {key}"


def reachable_errors(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything reachable from it: causes, contexts, exceptions in args."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        e = todo.pop()
        if any(e is s for s in seen):
            continue
        seen.append(e)
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
        todo.extend(a for a in e.args if isinstance(a, BaseException))
    return seen


@provider_names
@pytest.mark.parametrize("stream", [False, True])
async def test_redirect_loop_error_holds_no_key(provider: str, stream: bool) -> None:
    """aiohttp's TooManyRedirects carries request_info with the Authorization header: it
    must be neither the cause nor the context of the error raised."""
    spec = PROVIDERS[provider]
    key = new_key()
    async with spec.serve(ServerState()) as srv:
        srv.state.add_fault("status", status=307, body=b"", path=spec.chat_path, times=100,
                            headers={"Location": f"{srv.base_url}{spec.chat_path}"})
        async with spec.make(srv.url, key, max_retries=0) as llm:
            with pytest.raises(LLMError) as info:
                if stream:
                    await _drain(llm.chat_stream("hi"))
                else:
                    await llm.generate("hi")
        assert srv.state.last_request.authorization == f"Bearer {key}"  # the key was sent
    errors = reachable_errors(info.value)
    assert [type(e).__module__.split(".")[0] for e in errors] == ["llmkit"]
    for e in errors:
        assert_no_key(key, *error_texts(e), repr(e.args))
        assert getattr(e, "request_info", None) is None


async def test_url_password_never_shown(
    refused_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    password = f"pw-{uuid.uuid4().hex[:12]}"
    url = refused_url.replace("http://", f"http://alice:{password}@") + "/v1"
    caplog.set_level(logging.DEBUG)
    config = LLMConfig(provider="openai", model="gpt-4o-mini", base_url=url, timeout=2.0,
                       max_retries=1, extra=FAST_RETRY)
    async with OpenAILLM(config) as llm:
        with pytest.raises(LLMConnectionError) as info:
            await llm.generate("hi")
        texts = [repr(config), str(config), repr(llm), repr(llm.get_model_info())]
    assert "alice:***@" in str(info.value)
    for e in reachable_errors(info.value):
        texts += [*error_texts(e), repr(e.args)]
    texts += [caplog.text, *(repr(r.__dict__) for r in caplog.records)]
    for text in texts:
        assert password not in text, text[:300]


# --------------------------------------------------------------------------- TLS


def self_signed_context(tmp_path: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"),
            ]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file = tmp_path / "cert.pem"
    key_file = tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


@asynccontextmanager
async def https_openai_server(tmp_path: Path) -> AsyncIterator[tuple[str, ServerState]]:
    state = ServerState()
    runner, port = await _serve_app(make_openai_app(state), ssl_context=self_signed_context(tmp_path))
    try:
        yield f"https://127.0.0.1:{port}/v1", state
    finally:
        await runner.cleanup()


async def test_tls_verified_by_default(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with https_openai_server(tmp_path) as (url, state):
        async with OpenAILLM(LLMConfig(provider="openai", model="gpt-4o-mini", base_url=url,
                                       api_key=new_key(), extra=FAST_RETRY)) as llm:
            with pytest.raises(LLMConnectionError) as info:
                await llm.generate("hi")
            assert "certificate" in info.value.message.lower()
            assert info.value.retryable is False
            assert llm.get_metrics().retries == 0
            with pytest.raises(LLMConnectionError, match=r"(?i)certificate"):
                await _drain(llm.generate_stream("hi"))
        assert state.request_count == 0  # nothing got past the handshake


async def test_tls_verification_can_be_disabled(tmp_path: Path) -> None:
    async with https_openai_server(tmp_path) as (url, state):
        async with OpenAILLM(LLMConfig(provider="openai", model="gpt-4o-mini", base_url=url,
                                       api_key=new_key(),
                                       extra={**FAST_RETRY, "verify_ssl": False})) as llm:
            assert await llm.generate("hi") == "Echo: hi"
            deltas: list[str] = []
            async with aclosing(llm.generate_stream("hi there")) as gen:
                async for d in gen:
                    deltas.append(d)
            assert "".join(deltas) == "Echo: hi there"
        assert state.request_count == 2


# --------------------------------------------------------------------------- config loading


@pytest.mark.parametrize(
    "payload",
    [
        "!!python/object/apply:os.system ['echo pwned']",
        "!!python/object:collections.OrderedDict {}",
        "!!python/name:os.system",
    ],
)
def test_load_config_rejects_python_tags(tmp_path: Path, payload: str) -> None:
    path = tmp_path / "llm.yaml"
    path.write_text(f"llm:\n  provider: openai\n  model: {payload}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot parse config file"):
        load_config(path)


def test_load_config_interpolation_is_text_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_key()
    monkeypatch.setenv("EVIL_MODEL", "gpt\nprovider: ollama\nbase_url: http://evil")
    monkeypatch.setenv("EVIL_TAG", "!!python/object/apply:os.system ['echo pwned']")
    monkeypatch.setenv("EVIL_JSON", '{"a": 1}')
    monkeypatch.setenv("SECRET_KEY", key)
    path = tmp_path / "llm.yaml"
    path.write_text(
        "llm:\n"
        "  provider: openai\n"
        "  model: ${EVIL_MODEL}\n"
        "  api_key: ${SECRET_KEY}\n"
        "  base_url: http://127.0.0.1:1/${EVIL_JSON}\n"
        "  extra:\n"
        "    tag: ${EVIL_TAG}\n"
        "    nested: ['${EVIL_TAG:-x}', '${UNSET_FOR_TEST:-plain}']\n",
        encoding="utf-8",
    )
    monkeypatch.delenv("UNSET_FOR_TEST", raising=False)
    config = load_config(path)
    assert config.provider == "openai"
    assert config.model == "gpt\nprovider: ollama\nbase_url: http://evil"
    assert config.base_url == 'http://127.0.0.1:1/{"a": 1}'
    assert config.extra["tag"] == "!!python/object/apply:os.system ['echo pwned']"
    assert config.extra["nested"] == ["!!python/object/apply:os.system ['echo pwned']", "plain"]
    assert config.key() == key
    assert_no_key(key, repr(config), str(config))


def test_load_config_unset_variable_is_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMKIT_SURELY_UNSET", raising=False)
    path = tmp_path / "llm.json"
    path.write_text(orjson.dumps({"llm": {"provider": "openai", "model": "m",
                                          "api_key": "${LLMKIT_SURELY_UNSET}"}}).decode())
    with pytest.raises(ConfigError, match="LLMKIT_SURELY_UNSET"):
        load_config(path)


# --------------------------------------------------------------------------- local HF


def test_local_hf_does_not_trust_remote_code_by_default(tmp_path: Path) -> None:
    llm = HuggingFaceLLM(LLMConfig(provider="huggingface", model=str(tmp_path), base_url="local"))
    assert llm.use_local
    backend = llm._local_backend()  # constructed, nothing loaded
    assert backend.trust_remote_code is False
    assert backend._lm is None and backend._st is None
    opted_in = HuggingFaceLLM(LLMConfig(provider="huggingface", model=str(tmp_path),
                                        base_url="local", extra={"trust_remote_code": True}))
    assert opted_in._local_backend().trust_remote_code is True


# --------------------------------------------------------------------------- fuzzing

_header_values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["0", "-1", "1.5", "nan", "inf", "-inf", "1e309", "", " 3 ",
                     "Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT",
                     "Mon, 99 Foo 0000 99:99:99 XYZ", "Thu, 01 Jan 1970 00:00:00 +9999"]),
)
_headers = st.dictionaries(
    st.sampled_from(["Retry-After", "retry-after-ms", "x-request-id", "Content-Type",
                     "x-amzn-requestid", "X-Other"]),
    _header_values,
    max_size=4,
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(
        st.sampled_from(["error", "message", "type", "code", "detail", "error_type",
                         "estimated_time", "msg", "param", "x"]) | st.text(max_size=5),
        inner,
        max_size=5,
    ),
    max_leaves=12,
)
_bodies = st.one_of(
    st.binary(max_size=200),
    _json.map(orjson.dumps),
    st.text(max_size=200).map(str.encode),
    st.none(),
    st.builds(lambda t: f"<html><body><h1>{t}</h1></body></html>".encode(), st.text(max_size=30)),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(status=503, body=b'{"error": "loading", "estimated_time": -5}', headers={}, model=None,
         content_type=None)
@example(status=429, body=None, headers={"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"},
         model=None, content_type=None)
@given(
    status=st.integers(100, 599),
    body=_bodies,
    headers=_headers,
    model=st.none() | st.text(max_size=10),
    content_type=st.none() | st.sampled_from(["application/json", "text/html", "text/plain", ""]),
)
def test_fuzz_error_from_response(
    status: int, body: bytes | None, headers: dict[str, str], model: str | None,
    content_type: str | None,
) -> None:
    err = error_from_response(
        status, body, CIMultiDict(headers), provider="fuzz", model=model, content_type=content_type
    )
    assert isinstance(err, LLMError)
    assert err.status == status and err.provider == "fuzz"
    assert isinstance(err.message, str) and err.message
    assert err.retry_after is None or (not math.isnan(err.retry_after) and err.retry_after >= 0)
    assert str(err) and repr(err)
    if status == 429:
        assert isinstance(err, RateLimitError)
    if status >= 500 and isinstance(err, ServerError):
        assert err.retryable
    if content_type == "text/html" and body is not None and body.startswith(b"<html>"):
        assert "<h1>" not in err.message


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


_sse_lines = st.lists(
    st.one_of(
        st.binary(max_size=30),
        st.sampled_from([b"data: [DONE]", b"data:", b"event: error", b": comment", b"id: 1",
                         b"retry: 10", b"\xef\xbb\xbf", b"data: {\"x\":", b"\r", b"\r\n", b"\n"]),
        _json.map(lambda v: b"data: " + orjson.dumps(v)),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=2000)
@given(lines=_sse_lines, cuts=st.lists(st.integers(0, 10_000), max_size=8),
       sep=st.sampled_from([b"\n", b"\r\n", b"\r", b"\n\n"]))
def test_fuzz_sse_parser_and_openai_events(lines: list[bytes], cuts: list[int], sep: bytes) -> None:
    """Arbitrary bytes, cut anywhere: the SSE parser never raises, and the OpenAI event
    parser turns every event into a chunk, None, or an LLMError."""
    data = sep.join(lines)
    parser = SSEParser()
    events: list[SSEEvent] = []
    for piece in _split(data, cuts):
        events.extend(parser.iter_feed(piece))
    events.extend(parser.close())
    whole = SSEParser()
    assert [e.data for e in whole.feed(data) + whole.close()] == [e.data for e in events]
    for ev in events:
        _parse_openai(ev)


def _parse_openai(ev: SSEEvent) -> None:
    try:
        chunk = parse_stream_event(ev, "fuzz")
    except LLMError as exc:
        assert exc.provider == "fuzz" or isinstance(exc, StreamError)
        return
    chunks = chunk if isinstance(chunk, list) else [chunk]
    assert all(c is None or isinstance(c, StreamChunk) for c in chunks)


_delta = st.fixed_dictionaries(
    {},
    optional={
        "content": _json,
        "role": _json,
        "tool_calls": st.lists(
            st.fixed_dictionaries({}, optional={
                "index": _json, "id": _json, "type": _json,
                "function": st.fixed_dictionaries({}, optional={"name": _json, "arguments": _json})
                | _json,
            }) | _json,
            max_size=3,
        ) | _json,
    },
)
_openai_chunk = st.fixed_dictionaries(
    {},
    optional={
        "id": _json,
        "choices": st.lists(
            st.fixed_dictionaries({}, optional={"delta": _delta | _json,
                                                "finish_reason": _json, "index": _json}) | _json,
            max_size=2,
        ) | _json,
        "usage": st.fixed_dictionaries({}, optional={
            "prompt_tokens": _json, "completion_tokens": _json, "total_tokens": _json,
        }) | _json,
        "error": _json,
    },
)


_message = st.fixed_dictionaries(
    {},
    optional={"content": _json | st.lists(st.fixed_dictionaries({}, optional={"text": _json})),
              "role": _json, "tool_calls": _delta.map(lambda d: d.get("tool_calls")) | _json},
)
_chat_response = st.fixed_dictionaries(
    {},
    optional={
        "choices": st.lists(
            st.fixed_dictionaries({}, optional={"message": _message | _json,
                                                "finish_reason": _json}) | _json,
            max_size=2,
        ) | _json,
        "usage": _openai_chunk.map(lambda c: c.get("usage")),
        "model": _json,
        "error": _json,
    },
)


@settings(max_examples=400, deadline=2000)
@given(data=_chat_response | _json)
def test_fuzz_openai_chat_response(data: Any) -> None:
    """Non-stream responses of any shape: a ChatResponse or an LLMError, nothing else."""
    try:
        resp = parse_chat_response(data, "m", "fuzz")
    except LLMError as exc:
        assert exc.provider == "fuzz"
    else:
        assert isinstance(resp, ChatResponse) and isinstance(resp.content, str)


@settings(max_examples=500, deadline=2000)
@given(obj=_openai_chunk | _json, event=st.sampled_from(["message", "error", "", "ping"]))
def test_fuzz_openai_stream_event_shapes(obj: Any, event: str) -> None:
    """OpenAI-shaped chunks with arbitrary field types: a chunk or an LLMError, nothing else."""
    _parse_openai(SSEEvent(orjson.dumps(obj).decode(), event or "message"))


@settings(max_examples=300, deadline=2000)
@given(
    lines=st.lists(
        st.one_of(_json.map(orjson.dumps), st.binary(max_size=30),
                  st.sampled_from([b"", b"   ", b"{\"done\": true}", b"{\"error\": \"x\"}"])),
        max_size=10,
    ),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
)
def test_fuzz_ndjson_parser_and_ollama_lines(lines: list[bytes], cuts: list[int]) -> None:
    """Arbitrary NDJSON bytes, cut anywhere: values or StreamError; the values that precede
    a malformed line are produced first; Ollama's line check gives a dict or an LLMError."""
    data = b"\n".join(lines)
    parser = NDJSONParser()
    values: list[Any] = []
    failed = False
    try:
        for piece in _split(data, cuts):
            for value in parser.iter_feed(piece):
                values.append(value)
        values.extend(parser.close())
    except StreamError:
        failed = True
    expected: list[Any] = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            expected.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            break
    assert values == expected
    assert failed == (len(expected) < len([ln for ln in data.split(b"\n") if ln.strip()]))
    for value in values:
        try:
            checked = _checked(value, "fuzz")
        except LLMError:
            assert not isinstance(value, dict) or "error" in value
        else:
            assert isinstance(checked, dict) and "error" not in checked
