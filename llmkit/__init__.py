"""llmkit: one async-first interface over OpenAI(-compatible), Ollama and Hugging Face.

Every public name is imported on first access, so ``import llmkit`` costs almost nothing
and no torch, transformers or sentence-transformers is imported until a local model is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmkit import sync
    from llmkit.base import BaseLLM, PromptCache
    from llmkit.config import (
        LLMConfig,
        load_config,
        merge_config_with_defaults,
        provider_defaults,
    )
    from llmkit.errors import (
        AuthenticationError,
        ConfigError,
        ContextLengthError,
        InvalidRequestError,
        LLMConnectionError,
        LLMError,
        LLMTimeoutError,
        ModelNotFoundError,
        NotSupportedError,
        PermissionDeniedError,
        ProviderNotFoundError,
        RateLimitError,
        ServerError,
        StreamError,
        StreamTimeoutError,
    )
    from llmkit.fallback import FallbackLLM
    from llmkit.metrics import Metrics
    from llmkit.options import CallOptions
    from llmkit.otel import instrument
    from llmkit.providers.huggingface import HuggingFaceLLM
    from llmkit.providers.mock import MockLLM
    from llmkit.providers.ollama import OllamaLLM
    from llmkit.providers.openai import OpenAILLM
    from llmkit.registry import (
        LLMFactory,
        create_llm,
        list_providers,
        register_provider,
        unregister_provider,
    )
    from llmkit.types import (
        Capabilities,
        ChatResponse,
        Choice,
        Message,
        MessageList,
        ModelInfo,
        Role,
        StreamChunk,
        ToolCall,
        ToolCallDelta,
        Usage,
    )

__version__ = "0.2.0"

_LAZY = {
    "BaseLLM": "llmkit.base",
    "PromptCache": "llmkit.base",
    "LLMConfig": "llmkit.config",
    "load_config": "llmkit.config",
    "merge_config_with_defaults": "llmkit.config",
    "provider_defaults": "llmkit.config",
    "AuthenticationError": "llmkit.errors",
    "ConfigError": "llmkit.errors",
    "ContextLengthError": "llmkit.errors",
    "InvalidRequestError": "llmkit.errors",
    "LLMConnectionError": "llmkit.errors",
    "LLMError": "llmkit.errors",
    "LLMTimeoutError": "llmkit.errors",
    "ModelNotFoundError": "llmkit.errors",
    "NotSupportedError": "llmkit.errors",
    "PermissionDeniedError": "llmkit.errors",
    "ProviderNotFoundError": "llmkit.errors",
    "RateLimitError": "llmkit.errors",
    "ServerError": "llmkit.errors",
    "StreamError": "llmkit.errors",
    "StreamTimeoutError": "llmkit.errors",
    "Metrics": "llmkit.metrics",
    "CallOptions": "llmkit.options",
    "FallbackLLM": "llmkit.fallback",
    "instrument": "llmkit.otel",
    "LLMFactory": "llmkit.registry",
    "create_llm": "llmkit.registry",
    "list_providers": "llmkit.registry",
    "register_provider": "llmkit.registry",
    "unregister_provider": "llmkit.registry",
    "Capabilities": "llmkit.types",
    "ChatResponse": "llmkit.types",
    "Choice": "llmkit.types",
    "Message": "llmkit.types",
    "MessageList": "llmkit.types",
    "ModelInfo": "llmkit.types",
    "Role": "llmkit.types",
    "StreamChunk": "llmkit.types",
    "ToolCall": "llmkit.types",
    "ToolCallDelta": "llmkit.types",
    "Usage": "llmkit.types",
    "OpenAILLM": "llmkit.providers.openai",
    "OllamaLLM": "llmkit.providers.ollama",
    "HuggingFaceLLM": "llmkit.providers.huggingface",
    "MockLLM": "llmkit.providers.mock",
}


def __getattr__(name: str) -> Any:
    if name == "sync":  # the blocking API, a submodule
        return importlib.import_module("llmkit.sync")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llmkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AuthenticationError",
    "BaseLLM",
    "CallOptions",
    "Capabilities",
    "ChatResponse",
    "Choice",
    "ConfigError",
    "ContextLengthError",
    "FallbackLLM",
    "HuggingFaceLLM",
    "InvalidRequestError",
    "LLMConfig",
    "LLMConnectionError",
    "LLMError",
    "LLMFactory",
    "LLMTimeoutError",
    "Message",
    "MessageList",
    "Metrics",
    "MockLLM",
    "ModelInfo",
    "ModelNotFoundError",
    "NotSupportedError",
    "OllamaLLM",
    "OpenAILLM",
    "PermissionDeniedError",
    "PromptCache",
    "ProviderNotFoundError",
    "RateLimitError",
    "Role",
    "ServerError",
    "StreamChunk",
    "StreamError",
    "StreamTimeoutError",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
    "__version__",
    "create_llm",
    "instrument",
    "list_providers",
    "load_config",
    "merge_config_with_defaults",
    "provider_defaults",
    "register_provider",
    "sync",
    "unregister_provider",
]
