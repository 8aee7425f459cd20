"""Ollama: the client (:mod:`.client`), its wire format (:mod:`.wire`), model management
(:mod:`.models`) and Modelfile parsing (:mod:`.modelfile`)."""

from llmkit.providers.ollama.client import OllamaLLM

__all__ = ["OllamaLLM"]
