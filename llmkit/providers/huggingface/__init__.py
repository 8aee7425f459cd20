"""Hugging Face: the Inference Providers router, Text Generation Inference servers, the Hub
API, and local inference with transformers and sentence-transformers (:mod:`.local`)."""

from llmkit.providers.huggingface.client import HuggingFaceLLM

__all__ = ["HuggingFaceLLM"]
