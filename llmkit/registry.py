"""Provider registry, ``create_llm`` and :class:`LLMFactory`."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping
from typing import Any

from llmkit.base import BaseLLM
from llmkit.core.config import LLMConfig
from llmkit.core.errors import ConfigError, LLMError, ProviderNotFoundError

__all__ = [
    "LLMFactory",
    "create_llm",
    "list_providers",
    "register_provider",
    "unregister_provider",
]

Constructor = Callable[[LLMConfig], BaseLLM]

_lock = threading.Lock()
_registry: dict[str, Constructor | str] = {
    # Built-ins are imported on first use, so `import llmkit` stays light.
    "openai": "llmkit.providers.openai.client:OpenAILLM",
    "ollama": "llmkit.providers.ollama.client:OllamaLLM",
    "huggingface": "llmkit.providers.huggingface.client:HuggingFaceLLM",
    "mock": "llmkit.providers.mock.client:MockLLM",
    "fallback": "llmkit.wrap.fallback:FallbackLLM",
}
_aliases = {"hf": "huggingface", "openai-compatible": "openai"}


def register_provider(name: str, constructor: Constructor) -> None:
    """Register (or replace) a provider: ``constructor(config) -> BaseLLM``."""
    if not name or not isinstance(name, str):
        raise ConfigError("provider name must be a non-empty string")
    if not callable(constructor):
        raise ConfigError(f"constructor for {name!r} is not callable")
    with _lock:
        _registry[name.lower()] = constructor


def unregister_provider(name: str) -> None:
    with _lock:
        if _registry.pop(name.lower(), None) is None:
            raise ProviderNotFoundError(
                f"provider {name!r} is not registered; registered: {', '.join(list_providers())}"
            )


def list_providers() -> list[str]:
    with _lock:
        return sorted(_registry)


def _canonical(name: str) -> str:
    """The registered name ``name`` stands for: a registered name wins over an alias."""
    key = name.lower()
    with _lock:
        if key in _registry:
            return key
    return _aliases.get(key, key)


def _resolve(name: str) -> Constructor:
    key = _canonical(name)
    with _lock:
        ctor = _registry.get(key)
    if ctor is None:
        raise ProviderNotFoundError(
            f"unknown provider {name!r}; registered: {', '.join(list_providers())}",
            provider=name,
        )
    if isinstance(ctor, str):
        module, _, attr = ctor.partition(":")
        resolved: Constructor = getattr(importlib.import_module(module), attr)
        return resolved
    return ctor


def _to_config(config: LLMConfig | Mapping[str, Any]) -> LLMConfig:
    if isinstance(config, LLMConfig):
        return config
    if isinstance(config, Mapping):
        if not config.get("provider"):
            raise ConfigError("configuration has no 'provider'")
        name = _canonical(str(config["provider"]))
        _resolve(name)  # unknown names fail before validation
        if "chain" in config:  # a fallback's members travel in extra
            extra = {**(config.get("extra") or {}), "chain": config["chain"]}
            config = {k: v for k, v in config.items() if k != "chain"} | {"extra": extra}
        return LLMConfig.for_provider({**config, "provider": name})
    raise ConfigError(f"config must be an LLMConfig or a dict, not {type(config).__name__}")


def create_llm(config: LLMConfig | Mapping[str, Any]) -> BaseLLM:
    """A provider instance from a config (or a dict with at least ``provider``)."""
    cfg = _to_config(config)
    ctor = _resolve(cfg.provider)
    llm = ctor(cfg)
    if not isinstance(llm, BaseLLM):
        raise ConfigError(f"constructor of {cfg.provider!r} returned {type(llm).__name__}")
    return llm


class LLMFactory:
    """Creates providers and keeps track of them for health checks and closing."""

    def __init__(self) -> None:
        self._instances: list[BaseLLM] = []

    def list_providers(self) -> list[str]:
        return list_providers()

    def create_llm(self, config: LLMConfig | Mapping[str, Any]) -> BaseLLM:
        llm = create_llm(config)
        self._instances.append(llm)
        return llm

    def create_llm_from_map(self, d: Mapping[str, Any]) -> BaseLLM:
        return self.create_llm(d)

    @property
    def instances(self) -> list[BaseLLM]:
        return list(self._instances)

    async def health_check(self) -> dict[str, LLMError | None]:
        """Each created instance's health (``None`` = healthy), keyed by provider name; a
        fresh factory checks every registered provider configured from the environment."""
        import asyncio

        owned = not self._instances
        targets: list[tuple[str, BaseLLM | LLMError]] = []
        if owned:
            for name in list_providers():
                try:
                    targets.append((name, create_llm(LLMConfig.from_env(name))))
                except LLMError as exc:
                    targets.append((name, exc))
                except Exception as exc:  # a custom constructor failing
                    targets.append((name, ConfigError(f"cannot create {name!r}: {exc}")))
        else:
            targets = [(llm.provider, llm) for llm in self._instances]

        async def check(item: BaseLLM | LLMError) -> LLMError | None:
            if isinstance(item, LLMError):
                return item
            try:
                await item.health_check()
            except LLMError as exc:
                return exc
            return None

        try:
            results = await asyncio.gather(*(check(t) for _, t in targets))
        finally:
            if owned:
                for _, t in targets:
                    if isinstance(t, BaseLLM):
                        await t.aclose()
        out: dict[str, LLMError | None] = {}
        for (name, _), res in zip(targets, results, strict=True):
            if out.get(name) is None:  # an error for a provider name sticks
                out[name] = res
        return out

    async def close(self) -> None:
        instances, self._instances = self._instances, []
        for llm in instances:
            await llm.aclose()

    aclose = close

    async def __aenter__(self) -> LLMFactory:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
