"""Configuration: :class:`LLMConfig`, environment and file loading, provider defaults."""

from __future__ import annotations

import copy
import datetime as _dt
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_serializer,
    field_validator,
    model_validator,
)

from llmkit.core.errors import ConfigError, redact, register_secret

__all__ = [
    "LLMConfig",
    "load_config",
    "merge_config_with_defaults",
    "parse_duration",
    "provider_defaults",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from a number, ``"500ms"``, ``"30s"``, ``"2m"``, ``"1h"`` or a timedelta."""
    if isinstance(value, bool):
        raise ValueError("a duration cannot be a boolean")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            unit = m.group(2).lower() if m.group(2) else None
            return float(m.group(1)) * _UNIT[unit]
    raise ValueError(f"not a duration: {value!r} (use e.g. 30, '30s', '2m', '500ms')")


# ----------------------------------------------------------------------- provider defaults

_DEFAULTS: dict[str, dict[str, Any]] = {
    "openai": {
        "model": "gpt-4o-mini",
        "base_url": "https://api.openai.com/v1",
        "timeout": 60.0,
        "max_retries": 2,
        "max_concurrency": 64,
    },
    "ollama": {
        "model": "llama3.2",
        "base_url": "http://localhost:11434",
        "timeout": 120.0,
        "max_retries": 2,
        "max_concurrency": 16,
    },
    "huggingface": {
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "base_url": "https://router.huggingface.co",
        "timeout": 120.0,
        "max_retries": 2,
        "max_concurrency": 32,
    },
    "mock": {
        "model": "mock",
        "base_url": None,
        "timeout": 30.0,
        "max_retries": 0,
        "max_concurrency": 64,
    },
}

_GENERIC_DEFAULTS: dict[str, Any] = {
    "timeout": 60.0,
    "max_retries": 2,
    "max_concurrency": 64,
}


def provider_defaults(name: str) -> dict[str, Any]:
    """The default settings of a provider (a fresh copy; unknown names get generic ones).
    There are no sampling defaults: what is not set is not sent."""
    return copy.deepcopy(_DEFAULTS.get(name.lower(), _GENERIC_DEFAULTS))


def merge_config_with_defaults(name: str, user: Mapping[str, Any]) -> dict[str, Any]:
    """The provider's defaults overlaid with ``user``'s values (``None`` keeps the default;
    ``extra`` dicts are merged key by key)."""
    merged = provider_defaults(name)
    merged["provider"] = name
    for key, value in user.items():
        if value is None and key in merged:
            continue
        if key == "extra" and isinstance(value, Mapping):
            base = dict(merged.get("extra") or {})
            base.update(value)
            merged["extra"] = base
        else:
            merged[key] = value
    return merged


# ----------------------------------------------------------------------- environment


def _env_ollama_host() -> str | None:
    raw = os.environ.get("OLLAMA_BASE_URL") or os.environ.get("OLLAMA_HOST")
    if not raw:
        return None
    return normalize_ollama_host(raw)


def normalize_ollama_host(raw: str) -> str:
    """Ollama's own reading of OLLAMA_HOST: scheme and port optional (default http, 11434)."""
    raw = raw.strip().rstrip("/")
    scheme = "http"
    rest = raw
    if "://" in raw:
        scheme, rest = raw.split("://", 1)
    host, _, path = rest.partition("/")
    if host.startswith("["):  # IPv6 literal
        end = host.find("]")
        hostname, port = host[: end + 1], host[end + 2 :] if len(host) > end + 1 else ""
    elif host.count(":") == 1:
        hostname, port = host.split(":", 1)
    else:
        hostname, port = host, ""
    if not hostname or hostname == "0.0.0.0":
        hostname = "127.0.0.1" if hostname == "0.0.0.0" else "localhost"
    if not port:
        port = "443" if scheme == "https" else "11434"
    url = f"{scheme}://{hostname}:{port}"
    return f"{url}/{path}" if path else url


def _env_for(provider: str) -> dict[str, Any]:
    env = os.environ
    provider = provider.lower()
    out: dict[str, Any] = {}
    if provider == "openai":
        if env.get("OPENAI_API_KEY"):
            out["api_key"] = env["OPENAI_API_KEY"]
        if env.get("OPENAI_BASE_URL"):
            out["base_url"] = env["OPENAI_BASE_URL"]
    elif provider == "ollama":
        host = _env_ollama_host()
        if host:
            out["base_url"] = host
    elif provider in ("huggingface", "hf"):
        token = env.get("HUGGINGFACE_API_TOKEN") or env.get("HF_TOKEN")
        if token:
            out["api_key"] = token
    return out


# ----------------------------------------------------------------------- the model


class LLMConfig(BaseModel):
    """Settings of one provider instance. The API key is a :class:`SecretStr`: it never
    shows in ``repr()``, ``str()`` or ``model_dump()``."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, frozen=False, defer_build=True
    )

    provider: str
    model: str = ""
    api_key: SecretStr | None = None
    base_url: str | None = None
    # Sampling: None = not sent (the server's or model's own default applies).
    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    timeout: float = Field(default=60.0, gt=0.0)
    max_retries: int = Field(default=2, ge=0)
    max_concurrency: int = Field(default=64, gt=0)
    requests_per_minute: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)
    tokens_per_minute: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)
    extra: dict[str, Any] = Field(default_factory=dict)
    cache: str | None = None
    """Path of an SQLite reply cache (see :mod:`llmkit.calls.reply_cache`); None: no cache."""

    @field_validator("provider")
    @classmethod
    def _provider_name(cls, v: str) -> str:
        v = v.strip().lower()
        if not v:
            raise ValueError("provider must not be empty")
        return v

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, v: Any) -> float:
        seconds = parse_duration(v)
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"timeout must be a finite number of seconds > 0, not {v!r}")
        return seconds

    @field_validator("api_key", mode="before")
    @classmethod
    def _api_key(cls, v: Any) -> Any:
        if isinstance(v, str) and not v.strip():
            return None
        return v

    @model_validator(mode="after")
    def _remember_secret(self) -> LLMConfig:
        if self.api_key is not None:
            register_secret(self.api_key.get_secret_value())
        return self

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, (redact(value) if name == "base_url" and value else value)

    @field_serializer("api_key", when_used="always")
    def _dump_key(self, v: SecretStr | None) -> str | None:
        return None if v is None else "**********"

    def key(self) -> str | None:
        """The API key in clear (for building request headers only)."""
        return None if self.api_key is None else self.api_key.get_secret_value()

    @classmethod
    def from_env(cls, provider: str, **overrides: Any) -> LLMConfig:
        """Settings from the provider's environment variables, then its defaults;
        ``overrides`` win over both."""
        values = provider_defaults(provider)
        values.update(_env_for(provider))
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["provider"] = provider
        return cls(**values)

    @classmethod
    def for_provider(cls, data: Mapping[str, Any]) -> LLMConfig:
        """Defaults and environment of ``data['provider']`` overlaid with ``data``."""
        if "provider" not in data or not data["provider"]:
            raise ConfigError("configuration has no 'provider'")
        name = str(data["provider"]).lower()
        values = provider_defaults(name)
        values.update(_env_for(name))
        values = merge_config_with_defaults(name, {**values, **dict(data)})
        return cls(**values)


# ----------------------------------------------------------------------- files

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(value: Any, path: str) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            value = os.environ.get(name)
            if default is not None and not value:  # POSIX ${VAR:-default}: unset or empty
                return default
            if value is not None:
                return value
            raise ConfigError(f"environment variable {name} is not set (used in {path})")

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def load_config(path: str | os.PathLike[str], section: str | None = "llm") -> LLMConfig:
    """Load an :class:`LLMConfig` from a YAML or JSON file.

    ``${VAR}`` and ``${VAR:-default}`` in string values are replaced from the environment
    (text substitution only; the result is never parsed again). YAML is loaded safely.
    When the file has a top-level ``section`` key, that mapping is used.
    """
    import yaml  # PyYAML; safe loading only

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from None
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot parse config file {p}: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping, not {type(data).__name__}")
    if section and isinstance(data.get(section), dict):
        data = data[section]
    data = _interpolate(data, section or "config")
    return LLMConfig.for_provider(data)
