"""Ollama model management end to end against the Ollama test server: create from a
local GGUF / adapter / safetensors directory (blobs uploaded once), push with progress,
copy, delete."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llmkit import InvalidRequestError, ModelNotFoundError
from llmkit.providers.ollama import OllamaLLM
from tests.servers import ServerHandle

GGUF = b"GGUF\x03\x00\x00\x00" + bytes(range(256)) * 64


@pytest.fixture
async def llm(ollama_server: ServerHandle) -> AsyncIterator[OllamaLLM]:
    async with OllamaLLM(model="llama3.2", base_url=ollama_server.url, max_retries=0) as client:
        yield client


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
