"""The Hugging Face Hub API (model search, model records, inference provider mappings)
and pulling code out of a model's reply."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from multidict import MultiDict

from llmkit.core.errors import InvalidRequestError
from llmkit.http.error_mapping import error_from_payload
from llmkit.http.transport import HTTPTransport

__all__ = ["extract_code", "model_details", "provider_mapping", "search_models"]


async def search_models(
    hub: HTTPTransport, query: str | None, limit: int | None, filters: dict[str, Any]
) -> list[dict[str, Any]]:
    """Models on the Hub (``GET /api/models``); ``filters`` become query parameters (a
    list repeats the parameter, booleans are ``true`` / ``false``)."""
    params: MultiDict[str] = MultiDict()
    if query:
        params.add("search", str(query))
    if limit is not None:
        if int(limit) < 0:
            raise InvalidRequestError("limit must be >= 0", provider=hub.provider)
        params.add("limit", str(int(limit)))
    for key, value in filters.items():
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple, set)) else [value]
        for v in values:
            if isinstance(v, bool):
                params.add(key, "true" if v else "false")
            else:
                params.add(key, str(v))
    data = await hub.request("GET", "api/models", params=params)
    if not isinstance(data, list):
        raise error_from_payload(
            data, status=200, provider=hub.provider,
            default_message="Hub model search did not return a list",
        )
    return [dict(m) for m in data if isinstance(m, dict)]


async def model_details(
    hub: HTTPTransport, repo: str, params: dict[str, str] | None = None
) -> dict[str, Any]:
    """A model's Hub record (``GET /api/models/{repo}``); unknown ids raise
    :class:`ModelNotFoundError`."""
    if not repo or not isinstance(repo, str):
        raise InvalidRequestError("model_id must be a non-empty string", provider=hub.provider)
    data = await hub.request("GET", f"api/models/{quote(repo, safe='/')}", params=params, model=repo)
    if not isinstance(data, dict):
        raise error_from_payload(
            data, status=200, provider=hub.provider,
            default_message="Hub model details are not a JSON object",
        )
    return dict(data)


async def provider_mapping(hub: HTTPTransport, repo: str) -> dict[str, Any]:
    """The inference providers serving ``repo`` (``expand[]=inferenceProviderMapping``):
    ``{provider: {"status", "providerId", "task", ...}}`` in the account's order."""
    record = await model_details(hub, repo, {"expand[]": "inferenceProviderMapping"})
    mapping = record.get("inferenceProviderMapping")
    if isinstance(mapping, list):  # the list form: [{"provider": ..., ...}, ...]
        return {str(m.get("provider")): m for m in mapping if isinstance(m, dict)}
    return dict(mapping) if isinstance(mapping, dict) else {}


_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([^\s`]*)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.M | re.S)
_OPEN_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([^\s`]*)[^\n]*\n(.*)\Z", re.M | re.S)
_ALIASES = {
    "python": {"python", "py", "python3"},
    "javascript": {"javascript", "js", "node", "jsx"},
    "typescript": {"typescript", "ts", "tsx"},
    "c++": {"c++", "cpp", "cxx", "cc"},
    "c#": {"c#", "csharp", "cs"},
    "shell": {"shell", "sh", "bash", "zsh"},
    "bash": {"bash", "sh", "shell"},
    "rust": {"rust", "rs"},
    "go": {"go", "golang"},
    "ruby": {"ruby", "rb"},
    "kotlin": {"kotlin", "kt"},
    "yaml": {"yaml", "yml"},
    "markdown": {"markdown", "md"},
}


def extract_code(text: str, language: str | None = None) -> str:
    """The code in a model reply: the first fenced block tagged with ``language`` (or one of
    its usual aliases), else the first fenced block, else the whole text stripped. A fence
    left open at the end of the reply (a truncated answer) counts as a block."""
    blocks = [(m.group(2).lower(), m.group(3)) for m in _FENCE.finditer(text)]
    if not blocks:
        m = _OPEN_FENCE.search(text)
        if m:
            blocks = [(m.group(2).lower(), m.group(3))]
    if not blocks:
        return text.strip()
    if language:
        lang = language.strip().lower()
        names = _ALIASES.get(lang, set()) | {lang}
        for tag, code in blocks:
            if tag in names:
                return code.strip("\n").rstrip()
    return blocks[0][1].strip("\n").rstrip()


