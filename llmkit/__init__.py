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
    from llmkit.calls.metrics import Metrics
    from llmkit.core.config import (
        LLMConfig,
        load_config,
        merge_config_with_defaults,
        provider_defaults,
    )
    from llmkit.core.errors import (
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
        ReplyTruncatedError,
        ReplyValidationError,
        ServerError,
        StreamError,
        StreamTimeoutError,
    )
    from llmkit.core.options import CallOptions
    from llmkit.core.tools import to_openai_tools
    from llmkit.core.types import (
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
        normalize_messages,
    )
    from llmkit.providers.huggingface.client import HuggingFaceLLM
    from llmkit.providers.mock.client import MockLLM
    from llmkit.providers.ollama.client import OllamaLLM
    from llmkit.providers.openai.client import OpenAILLM
    from llmkit.registry import (
        LLMFactory,
        create_llm,
        list_providers,
        register_provider,
        unregister_provider,
    )
    from llmkit.wrap.fallback import FallbackLLM
    from llmkit.wrap.otel import instrument, uninstrument

from llmkit.core.version import __version__

_LAZY = {
    "BaseLLM": "llmkit.base",
    "PromptCache": "llmkit.base",
    "LLMConfig": "llmkit.core.config",
    "load_config": "llmkit.core.config",
    "merge_config_with_defaults": "llmkit.core.config",
    "provider_defaults": "llmkit.core.config",
    "AuthenticationError": "llmkit.core.errors",
    "ConfigError": "llmkit.core.errors",
    "ContextLengthError": "llmkit.core.errors",
    "InvalidRequestError": "llmkit.core.errors",
    "LLMConnectionError": "llmkit.core.errors",
    "LLMError": "llmkit.core.errors",
    "LLMTimeoutError": "llmkit.core.errors",
    "ModelNotFoundError": "llmkit.core.errors",
    "NotSupportedError": "llmkit.core.errors",
    "PermissionDeniedError": "llmkit.core.errors",
    "ProviderNotFoundError": "llmkit.core.errors",
    "RateLimitError": "llmkit.core.errors",
    "ReplyTruncatedError": "llmkit.core.errors",
    "ReplyValidationError": "llmkit.core.errors",
    "ServerError": "llmkit.core.errors",
    "StreamError": "llmkit.core.errors",
    "StreamTimeoutError": "llmkit.core.errors",
    "Metrics": "llmkit.calls.metrics",
    "CallOptions": "llmkit.core.options",
    "normalize_messages": "llmkit.core.types",
    "to_openai_tools": "llmkit.core.tools",
    "FallbackLLM": "llmkit.wrap.fallback",
    "instrument": "llmkit.wrap.otel",
    "uninstrument": "llmkit.wrap.otel",
    "LLMFactory": "llmkit.registry",
    "create_llm": "llmkit.registry",
    "list_providers": "llmkit.registry",
    "register_provider": "llmkit.registry",
    "unregister_provider": "llmkit.registry",
    "Capabilities": "llmkit.core.types",
    "ChatResponse": "llmkit.core.types",
    "Choice": "llmkit.core.types",
    "Message": "llmkit.core.types",
    "MessageList": "llmkit.core.types",
    "ModelInfo": "llmkit.core.types",
    "Role": "llmkit.core.types",
    "StreamChunk": "llmkit.core.types",
    "ToolCall": "llmkit.core.types",
    "ToolCallDelta": "llmkit.core.types",
    "Usage": "llmkit.core.types",
    "OpenAILLM": "llmkit.providers.openai.client",
    "OllamaLLM": "llmkit.providers.ollama.client",
    "HuggingFaceLLM": "llmkit.providers.huggingface.client",
    "MockLLM": "llmkit.providers.mock.client",
}


def __getattr__(name: str) -> Any:
    if name in ("sync", "jobs"):  # the blocking API and batch jobs, subpackages
        return importlib.import_module(f"llmkit.{name}")
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
    "ReplyTruncatedError",
    "ReplyValidationError",
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
    "jobs",
    "list_providers",
    "load_config",
    "merge_config_with_defaults",
    "normalize_messages",
    "provider_defaults",
    "register_provider",
    "sync",
    "to_openai_tools",
    "uninstrument",
    "unregister_provider",
]
