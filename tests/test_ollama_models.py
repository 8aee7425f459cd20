"""Ollama model management end to end against the Ollama test server: create from a
local GGUF / adapter / safetensors directory (blobs uploaded once), push with progress,
copy, delete."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from llmkit import InvalidRequestError, ModelNotFoundError, StreamError
from llmkit.providers.ollama.client import OllamaLLM
from tests.servers import ServerHandle

GGUF = b"GGUF\x03\x00\x00\x00" + bytes(range(256)) * 64


@pytest.fixture
async def llm(ollama_server: ServerHandle) -> AsyncIterator[OllamaLLM]:
    async with OllamaLLM(model="llama3.2", base_url=ollama_server.url, max_retries=0) as client:
        yield client


def last_body(server: ServerHandle, path: str) -> dict[str, Any]:
    body = server.state.requests_to(path)[-1].json
    assert isinstance(body, dict)
    return body


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_requests(server: ServerHandle) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in server.state.requests if r.path.startswith("/api/blobs/")]


async def test_create_from_local_gguf_uploads_once(
    llm: OllamaLLM, ollama_server: ServerHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tiny.gguf").write_bytes(GGUF)
    monkeypatch.chdir(tmp_path)
    digest = digest_of(GGUF)
    statuses: list[dict[str, object]] = []
    modelfile = 'FROM ./tiny.gguf\nPARAMETER temperature 0.2\nPARAMETER stop "<|end|>"\nSYSTEM "Be brief."'
    final = await llm.create_model("tiny", modelfile, progress=statuses.append)
    assert final == {"status": "success"}
    assert statuses[0] == {"status": "parsing GGUF"}
    assert {"status": f"using existing layer {digest}"} in statuses
    route = f"/api/blobs/{digest}"
    assert blob_requests(ollama_server) == [("HEAD", route), ("POST", route)]
    upload = ollama_server.state.requests_to(route, "POST")[0]
    assert upload.body == GGUF
    assert upload.headers["Content-Type"] == "application/octet-stream"
    [create] = [r.json for r in ollama_server.state.requests_to("/api/create")]
    assert create == {
        "model": "tiny",
        "files": {"tiny.gguf": digest},
        "parameters": {"temperature": 0.2, "stop": ["<|end|>"]},
        "system": "Be brief.",
        "stream": True,
    }
    # the same file again: HEAD says the server has it, nothing is uploaded
    await llm.create_model("tiny2", "FROM ./tiny.gguf")
    assert blob_requests(ollama_server)[2:] == [("HEAD", route)]
    names = [m["name"] for m in await llm.list_models()]
    assert "tiny:latest" in names and "tiny2:latest" in names
    # the created model is used with its own PARAMETERs: no options sent
    await llm.chat("hi", model="tiny")
    assert "options" not in ollama_server.state.requests_to("/api/chat")[-1].json


async def test_create_with_local_adapter_and_directory(
    llm: OllamaLLM, ollama_server: ServerHandle, tmp_path: Path
) -> None:
    adapter = tmp_path / "lora.gguf"
    adapter.write_bytes(b"LORA" * 100)
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "config.json").write_bytes(b'{"architectures": ["LlamaForCausalLM"]}')
    (weights / "model.safetensors").write_bytes(b"\x00" * 512)
    await llm.create_model("tuned", f"FROM llama3.2\nADAPTER {adapter}")
    await llm.create_model("converted", from_=str(weights))
    tuned, converted = (r.json for r in ollama_server.state.requests_to("/api/create"))
    assert tuned["from"] == "llama3.2"
    assert tuned["adapters"] == {"lora.gguf": digest_of(b"LORA" * 100)}
    assert "from" not in converted
    assert converted["files"] == {
        "config.json": digest_of(b'{"architectures": ["LlamaForCausalLM"]}'),
        "model.safetensors": digest_of(b"\x00" * 512),
    }
    posts = [p for m, p in blob_requests(ollama_server) if m == "POST"]
    assert len(posts) == 3


async def test_create_blob(llm: OllamaLLM, ollama_server: ServerHandle, tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(GGUF)
    assert await llm.create_blob(path) == digest_of(GGUF)
    assert await llm.create_blob(str(path)) == digest_of(GGUF)
    assert [m for m, _ in blob_requests(ollama_server)] == ["HEAD", "POST", "HEAD"]
    with pytest.raises(InvalidRequestError, match="no such file"):
        await llm.create_blob(tmp_path / "absent.gguf")


async def test_create_rejects_unknown_blob(llm: OllamaLLM) -> None:
    with pytest.raises(InvalidRequestError, match="not found"):
        await llm.create_model("x", files={"x.gguf": "sha256:" + "0" * 64})


async def test_push_with_progress(llm: OllamaLLM) -> None:
    await llm.create_model("me/tiny", from_="llama3.2")
    progress = [p async for p in llm.push_model("me/tiny")]
    assert progress[0] == {"status": "retrieving manifest"}
    assert progress[-1] == {"status": "success"}
    uploads = [p for p in progress if "completed" in p]
    assert [p["completed"] for p in uploads] == [0, uploads[0]["total"] // 2, uploads[0]["total"]]
    with pytest.raises(ModelNotFoundError):
        async for _ in llm.push_model("me/absent"):
            pass


async def test_copy_then_delete(llm: OllamaLLM) -> None:
    await llm.copy_model("llama3.2", "llama3.2-backup")
    assert "llama3.2-backup:latest" in [m["name"] for m in await llm.list_models()]
    shown = await llm.show_model("llama3.2-backup")
    assert shown["details"]["family"] == "llama"
    await llm.delete_model("llama3.2-backup")
    assert "llama3.2-backup:latest" not in [m["name"] for m in await llm.list_models()]
    with pytest.raises(ModelNotFoundError):
        await llm.delete_model("llama3.2-backup")
    with pytest.raises(ModelNotFoundError):
        await llm.copy_model("absent", "other")
    with pytest.raises(InvalidRequestError):
        await llm.copy_model("llama3.2", "")


# --------------------------------------------------------------------------- read, pull, delete, create


async def test_version_tags_show_ps(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    assert await llm.get_version() == "0.12.0"
    names = [m["name"] for m in await llm.list_models()]
    assert names == ["llama3.2:latest", "nomic-embed-text:latest"]
    assert await llm.list_running() == []
    await llm.chat("load it")
    running = await llm.list_running()
    assert [m["name"] for m in running] == ["llama3.2:latest"]
    assert await llm.generate_completion("", keep_alive=0) == ""
    assert await llm.list_running() == []
    shown = await llm.show_model("llama3.2")
    assert shown["model_info"]["llama.context_length"] == 4096
    assert last_body(ollama_server, "/api/show") == {"model": "llama3.2"}


async def test_model_info_context_after_show(llm: OllamaLLM) -> None:
    info = llm.get_model_info()
    assert info.provider == "ollama"
    assert info.capabilities.streaming and info.capabilities.embeddings and info.capabilities.tools
    assert info.context_length is None
    await llm.show_model()
    info = llm.get_model_info()
    assert info.context_length == 4096
    assert info.details["family"] == "llama"


async def test_pull_model_progress(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    events = [e async for e in llm.pull_model("qwen3:0.6b")]
    assert events[0] == {"status": "pulling manifest"}
    assert events[-1] == {"status": "success"}
    layers = [e for e in events if "digest" in e]
    assert layers and all(e["completed"] <= e["total"] for e in layers)
    assert layers[-1]["completed"] == layers[-1]["total"]
    body = last_body(ollama_server, "/api/pull")
    assert body == {"model": "qwen3:0.6b", "stream": True}
    assert "qwen3:0.6b" in [m["name"] for m in await llm.list_models()]


async def test_pull_model_error_line(llm: OllamaLLM) -> None:
    seen: list[dict[str, Any]] = []
    with pytest.raises(StreamError, match="file does not exist"):
        async for event in llm.pull_model("missing-model"):
            seen.append(event)
    assert seen == [{"status": "pulling manifest"}]


async def test_pull_truncated_before_success(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    ollama_server.state.add_fault("truncate_stream", path="/api/pull", after=3)
    with pytest.raises(StreamError, match="success"):
        async for _ in llm.pull_model("qwen3"):
            pass


async def test_delete_model(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    assert await llm.delete_model("nomic-embed-text") is None
    req = ollama_server.state.requests_to("/api/delete")[-1]
    assert req.method == "DELETE"
    assert req.json == {"model": "nomic-embed-text"}
    assert [m["name"] for m in await llm.list_models()] == ["llama3.2:latest"]
    with pytest.raises(ModelNotFoundError, match="nomic-embed-text"):
        await llm.delete_model("nomic-embed-text")


async def test_create_model_from_modelfile(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    modelfile = '''
# a comment
FROM llama3.2
parameter temperature 0.3
PARAMETER num_ctx 4096
PARAMETER stop "<|eot_id|>"
PARAMETER stop "User:"
SYSTEM """You are Mario.
Always cheerful."""
MESSAGE user Who are you?
MESSAGE assistant "It's-a me!"
'''
    seen: list[dict[str, Any]] = []
    result = await llm.create_model("mario", modelfile, quantize="q4_K_M", progress=seen.append)
    assert result == {"status": "success"}
    assert seen[-1] == result and len(seen) > 2
    assert any("quantizing" in s["status"] for s in seen)
    body = last_body(ollama_server, "/api/create")
    assert body == {
        "model": "mario",
        "from": "llama3.2",
        "parameters": {"temperature": 0.3, "num_ctx": 4096, "stop": ["<|eot_id|>", "User:"]},
        "system": "You are Mario.\nAlways cheerful.",
        "messages": [
            {"role": "user", "content": "Who are you?"},
            {"role": "assistant", "content": "It's-a me!"},
        ],
        "quantize": "q4_K_M",
        "stream": True,
    }
    assert "mario:latest" in [m["name"] for m in await llm.list_models()]


async def test_create_model_keywords(llm: OllamaLLM, ollama_server: ServerHandle) -> None:
    result = await llm.create_model(
        "luigi", "FROM llama3.2\nPARAMETER top_k 10", from_="llama3.2:latest",
        system="You are Luigi.", parameters={"seed": 7},
    )
    assert result["status"] == "success"
    body = last_body(ollama_server, "/api/create")
    assert body["from"] == "llama3.2:latest"
    assert body["system"] == "You are Luigi."
    assert body["parameters"] == {"top_k": 10, "seed": 7}
    with pytest.raises(ModelNotFoundError, match="ghost"):
        await llm.create_model("x", from_="ghost")
    with pytest.raises(InvalidRequestError, match="line 2"):
        await llm.create_model("y", "FROM llama3.2\nBOGUS thing")
