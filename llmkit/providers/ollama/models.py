"""Ollama model management: list, show, pull, push, copy, delete, blobs and create."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from llmkit.core.errors import InvalidRequestError, LLMError
from llmkit.providers.http_provider import HTTPProvider
from llmkit.providers.ollama.modelfile import is_local_path, parse_modelfile
from llmkit.providers.ollama.wire import checked_line

__all__ = ["OllamaModelAPI", "full_name"]

_READ_SIZE = 1 << 20


def full_name(name: str) -> str:
    """``llama3.2`` -> ``llama3.2:latest`` (a tag defaults to ``latest``)."""
    return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"


def _is_done(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("done") is True


def _is_success(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("status") == "success"


def _files_of(ref: str) -> list[str]:
    """The file ``ref`` names, or the files of the directory it names (sorted)."""
    path = os.path.expanduser(ref)
    if os.path.isdir(path):
        return sorted(
            os.path.join(path, n) for n in os.listdir(path) if os.path.isfile(os.path.join(path, n))
        )
    return [path]


def _sha256(path: str) -> str:
    if not os.path.isfile(path):
        raise InvalidRequestError(f"no such file: {path!r}", provider="ollama")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_READ_SIZE):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


async def _file_chunks(path: str) -> AsyncIterator[bytes]:
    """The file's bytes, read off the event loop, for a streamed upload."""
    f = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(f.read, _READ_SIZE):
            yield chunk
    finally:
        f.close()


class OllamaModelAPI(HTTPProvider):
    """The model-management endpoints of an Ollama server (base of :class:`OllamaLLM`)."""

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._shown: dict[str, dict[str, Any]] = {}

    def _ndjson(
        self,
        path: str,
        body: dict[str, Any],
        model: str,
        *,
        is_last: Callable[[Any], bool] = _is_done,
        end_marker: str = 'the final "done": true line',
        **client: Any,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The transport's stream of decoded NDJSON objects up to the last one (``done:
        true`` by default); error lines raise inside the transport."""
        provider = self.provider
        return self._http.stream(
            "POST", path, json=body, kind="ndjson", is_last=is_last, model=model,
            end_marker=end_marker, parse=lambda obj: checked_line(obj, provider), **client,
        )

    async def _statuses(
        self, path: str, body: dict[str, Any], model: str
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Progress objects of a pull / push / create, the last one ``{"status": "success"}``."""
        lines = self._ndjson(path, body, model, is_last=_is_success, end_marker='the "success" status')
        async with aclosing(lines):
            async for obj in lines:
                yield obj

    # ------------------------------------------------------------------ read

    async def get_version(self) -> str:
        data = await self._http.request("GET", "api/version")
        return str((data or {}).get("version", ""))

    async def list_models(self) -> list[dict[str, Any]]:
        """Local models (``GET /api/tags``)."""
        data = await self._http.request("GET", "api/tags")
        return list((data or {}).get("models") or [])

    async def list_running(self) -> list[dict[str, Any]]:
        """Models loaded in memory (``GET /api/ps``)."""
        data = await self._http.request("GET", "api/ps")
        return list((data or {}).get("models") or [])

    async def show_model(self, name: str | None = None, *, verbose: bool = False) -> dict[str, Any]:
        """Model details (``POST /api/show``): ``details``, ``model_info``, ``parameters``,
        ``template``, ``capabilities``, ..."""
        name = name or self.model
        body: dict[str, Any] = {"model": name}
        if verbose:
            body["verbose"] = True
        data = await self._http.request("POST", "api/show", json=body, model=name)
        result = dict(data or {})
        self._shown[full_name(name)] = result
        return result

    # ------------------------------------------------------------------ change

    async def delete_model(self, name: str) -> None:
        """Delete a local model (``DELETE /api/delete``); ModelNotFoundError if absent."""
        await self._http.request("DELETE", "api/delete", json={"model": name}, model=name)
        self._shown.pop(full_name(name), None)

    async def copy_model(self, source: str, destination: str) -> None:
        """Copy ``source`` to the new name ``destination`` (``POST /api/copy``)."""
        for label, value in (("source", source), ("destination", destination)):
            if not isinstance(value, str) or not value:
                raise InvalidRequestError(f"{label} must be a model name", provider=self.provider)
        await self._http.request(
            "POST", "api/copy", json={"source": source, "destination": destination},
            model=source, parse="bytes",
        )
        self._shown.pop(full_name(destination), None)

    def pull_model(self, name: str, *, insecure: bool = False) -> AsyncGenerator[dict[str, Any], None]:
        """Download a model; yields the progress objects (``status`` and, while layers
        download, ``digest``, ``total``, ``completed``), the last one ``{"status": "success"}``.
        An error line raises :class:`StreamError`."""
        body: dict[str, Any] = {"model": name, "stream": True}
        if insecure:
            body["insecure"] = True
        return self._statuses("api/pull", body, name)

    def push_model(self, name: str, *, insecure: bool = False) -> AsyncGenerator[dict[str, Any], None]:
        """Upload a model to its registry (``POST /api/push``; the name is
        ``<namespace>/<model>:<tag>``); yields the progress objects like :meth:`pull_model`."""
        body: dict[str, Any] = {"model": name, "stream": True}
        if insecure:
            body["insecure"] = True
        return self._statuses("api/push", body, name)

    async def create_blob(self, path: str | os.PathLike[str]) -> str:
        """Upload a local file (a GGUF model, a LoRA adapter, ...) to the server's blob
        store once and return its digest (``sha256:<hex>``): ``HEAD /api/blobs/<digest>``
        first, ``POST`` only when the server does not have it."""
        file = os.fspath(path)
        digest = await asyncio.to_thread(_sha256, file)
        route = f"api/blobs/{digest}"
        try:
            await self._http.request("HEAD", route, parse="bytes")
            return digest
        except LLMError as exc:
            if exc.status != 404:
                raise
        await self._http.request(
            "POST", route, parse="bytes", upload=lambda: _file_chunks(file)
        )
        return digest

    async def _upload_files(self, ref: str) -> dict[str, str]:
        """``{file name: digest}`` for a local file, or for each file of a directory
        (a safetensors model)."""
        files = await asyncio.to_thread(_files_of, ref)
        if not files:
            raise InvalidRequestError(f"directory {ref!r} has no files", provider=self.provider)
        return {os.path.basename(f): await self.create_blob(f) for f in files}

    async def create_model(
        self,
        name: str,
        modelfile: str | None = None,
        *,
        progress: Callable[[dict[str, Any]], Any] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Create ``name`` (``POST /api/create``) from a Modelfile text and/or the create
        API's fields (``from_`` or ``from``, ``system``, ``template``, ``parameters``,
        ``messages``, ``license``, ``adapters``, ``files``, ``quantize``, ...; keywords win
        over the Modelfile, ``parameters`` merge key by key).

        A FROM or ADAPTER naming a local file (``./model.gguf``) or directory is uploaded
        with :meth:`create_blob` (once: skipped when the server already has the digest) and
        sent as ``files`` / ``adapters``. The status lines are streamed (each passed to
        ``progress`` when given); returns the final status, ``{"status": "success"}``."""
        body: dict[str, Any] = parse_modelfile(modelfile) if modelfile else {}
        for key, value in fields.items():
            key = "from" if key == "from_" else key
            if value is None:
                continue
            if key == "parameters" and isinstance(body.get("parameters"), dict):
                body["parameters"] = {**body["parameters"], **dict(value)}
            else:
                body[key] = value
        source = body.get("from")
        if isinstance(source, str) and is_local_path(source):
            del body["from"]
            body["files"] = {**(body.get("files") or {}), **await self._upload_files(source)}
        adapters = body.get("adapters")
        if isinstance(adapters, dict):
            resolved: dict[str, str] = {}
            for file_name, ref in adapters.items():
                if isinstance(ref, str) and is_local_path(ref):
                    resolved.update(await self._upload_files(ref))
                else:
                    resolved[file_name] = ref
            body["adapters"] = resolved
        body["model"] = name
        body["stream"] = True
        last: dict[str, Any] = {}
        async with aclosing(self._statuses("api/create", body, str(source or name))) as statuses:
            async for obj in statuses:
                last = obj
                if progress is not None:
                    progress(obj)
        self._shown.pop(full_name(name), None)
        return last
