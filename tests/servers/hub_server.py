"""The Hub API of the Hugging Face test server: ``GET /api/models`` (search, filters,
sort, paging with a ``Link`` header) and ``GET /api/models/{repo_id}`` (with
``expand[]=inferenceProviderMapping``), on :func:`tests.servers.hf_server.make_hf_app`."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from .base import ServerState, json_response

# The Hub's inferenceProviderMapping of some models, in the account's preference order.
PROVIDER_MAPPINGS: dict[str, dict[str, dict[str, Any]]] = {
    "BAAI/bge-small-en-v1.5": {
        "novita": {"status": "live", "providerId": "baai/bge-small", "task": "conversational"},
        "scaleway": {"status": "staging", "providerId": "bge-small-staging",
                     "task": "feature-extraction"},
        "together": {"status": "live", "providerId": "BAAI/bge-small-en-v1.5-together",
                     "task": "feature-extraction"},
        "hf-inference": {"status": "live", "providerId": "BAAI/bge-small-en-v1.5",
                         "task": "feature-extraction"},
    },
    "sentence-transformers/all-MiniLM-L6-v2": {
        "hf-inference": {"status": "live", "providerId": "sentence-transformers/all-MiniLM-L6-v2",
                         "task": "feature-extraction"},
    },
}

def default_hub_models() -> list[dict[str, Any]]:
    """Hub model records (the same fields the Hub returns with ``full=true``)."""

    def record(
        repo_id: str,
        pipeline_tag: str,
        library: str,
        downloads: int,
        likes: int,
        tags: list[str],
        created: str,
        files: list[str],
        gated: bool | str = False,
    ) -> dict[str, Any]:
        sha = hashlib.sha1(repo_id.encode()).hexdigest()
        return {
            "_id": sha[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0],
            "sha": sha,
            "lastModified": created.replace("T00", "T12"),
            "createdAt": created,
            "private": False,
            "disabled": False,
            "gated": gated,
            "downloads": downloads,
            "likes": likes,
            "trendingScore": likes // 10,
            "tags": [*tags, library, pipeline_tag],
            "pipeline_tag": pipeline_tag,
            "library_name": library,
            "siblings": [{"rfilename": f} for f in files],
            "cardData": {"license": "apache-2.0", "language": ["en"], "tags": tags},
        }

    return [
        record(
            "meta-llama/Llama-3.1-8B-Instruct",
            "text-generation",
            "transformers",
            5_000_000,
            4000,
            ["safetensors", "llama", "conversational", "text-generation-inference"],
            "2024-07-18T00:00:00.000Z",
            ["README.md", "config.json", "model.safetensors", "tokenizer.json"],
            gated="manual",
        ),
        record(
            "sentence-transformers/all-MiniLM-L6-v2",
            "sentence-similarity",
            "sentence-transformers",
            90_000_000,
            3000,
            ["pytorch", "safetensors", "bert", "feature-extraction"],
            "2022-03-02T00:00:00.000Z",
            ["README.md", "config.json", "model.safetensors", "modules.json"],
        ),
        record(
            "BAAI/bge-small-en-v1.5",
            "feature-extraction",
            "sentence-transformers",
            3_000_000,
            300,
            ["pytorch", "onnx", "bert", "mteb"],
            "2023-09-12T00:00:00.000Z",
            ["README.md", "config.json", "model.safetensors"],
        ),
        record(
            "Qwen/Qwen2.5-0.5B-Instruct",
            "text-generation",
            "transformers",
            1_500_000,
            400,
            ["safetensors", "qwen2", "conversational", "text-generation-inference"],
            "2024-09-16T00:00:00.000Z",
            ["README.md", "config.json", "model.safetensors", "tokenizer.json"],
        ),
        record(
            "openai-community/gpt2",
            "text-generation",
            "transformers",
            10_000_000,
            2500,
            ["pytorch", "tf", "jax", "gpt2"],
            "2022-03-02T00:00:00.000Z",
            ["README.md", "config.json", "pytorch_model.bin"],
        ),
    ]


SUMMARY_FIELDS = (
    "_id",
    "id",
    "likes",
    "trendingScore",
    "private",
    "downloads",
    "tags",
    "pipeline_tag",
    "library_name",
    "createdAt",
    "modelId",
)


def add_hub_routes(app: web.Application, state: ServerState) -> None:
    def hub_error(status: int, message: str, code: str) -> web.Response:
        return json_response(
            {"error": message}, status, {"X-Error-Code": code, "X-Error-Message": message}
        )

    async def list_models(request: web.Request) -> web.Response:
        q = request.query
        items = list(state.hub_models or [])
        search = q.get("search")
        if search:
            items = [m for m in items if search.lower() in str(m.get("id", "")).lower()]
        author = q.get("author")
        if author:
            items = [m for m in items if str(m.get("id", "")).split("/")[0] == author]
        filters: list[str] = []
        for value in q.getall("filter", []):
            filters.extend(f for f in value.split(",") if f)
        for f in filters:
            items = [
                m
                for m in items
                if f in (m.get("tags") or []) or f in (m.get("pipeline_tag"), m.get("library_name"))
            ]
        pipeline_tag = q.get("pipeline_tag")
        if pipeline_tag:
            items = [m for m in items if m.get("pipeline_tag") == pipeline_tag]
        library = q.get("library")
        if library:
            items = [m for m in items if m.get("library_name") == library]
        sort = q.get("sort")
        if sort:
            key = "trendingScore" if sort == "trending_score" else sort
            descending = q.get("direction", "-1") == "-1"
            present = [m for m in items if m.get(key) is not None]
            missing = [m for m in items if m.get(key) is None]
            present.sort(key=lambda m: m[key], reverse=descending)
            items = present + missing
        try:
            offset = max(0, int(q.get("cursor", "0")))
        except ValueError:
            return hub_error(400, "Invalid cursor", "InvalidCursor")
        limit_raw = q.get("limit")
        try:
            limit = int(limit_raw) if limit_raw is not None else 1000
        except ValueError:
            return hub_error(400, '"limit" must be a number', "BadRequest")
        page = items[offset : offset + limit] if limit > 0 else items[offset:]
        full = q.get("full", "").lower() in ("1", "true")
        out = [dict(m) if full else {k: m[k] for k in SUMMARY_FIELDS if k in m} for m in page]
        headers: dict[str, str] = {}
        if limit > 0 and offset + limit < len(items):
            params = [(k, v) for k, v in q.items() if k != "cursor"]
            params.append(("cursor", str(offset + limit)))
            url = request.url.with_query(None)
            headers["Link"] = f'<{url}?{urlencode(params)}>; rel="next"'
        return json_response(out, headers=headers)

    async def model_info(request: web.Request) -> web.Response:
        repo_id = request.match_info["repo_id"]
        if "/revision/" in repo_id:
            repo_id = repo_id.split("/revision/", 1)[0]
        expand = request.query.getall("expand[]", [])
        for m in state.hub_models or []:
            if m.get("id") == repo_id:
                if expand:  # only the requested attributes, as the Hub does
                    out: dict[str, Any] = {"_id": m["_id"], "id": repo_id}
                    if "inferenceProviderMapping" in expand:
                        out["inferenceProviderMapping"] = PROVIDER_MAPPINGS.get(repo_id, {})
                    return json_response(out)
                return json_response(m)
        return hub_error(404, "Repository not found", "RepoNotFound")

    app.router.add_get("/api/models", list_models)
    app.router.add_get("/api/models/{repo_id:.+}", model_info)
