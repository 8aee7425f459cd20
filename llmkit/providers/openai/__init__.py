"""OpenAI and OpenAI-compatible servers: the client (:mod:`.client`) and its wire formats
(:mod:`.chat`: chat completions)."""

from llmkit.providers.openai.client import OpenAILLM

__all__ = ["OpenAILLM"]
