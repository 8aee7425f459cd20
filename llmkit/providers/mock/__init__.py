"""The mock provider: deterministic replies, no network, for users' own tests."""

from llmkit.providers.mock.client import MockLLM

__all__ = ["MockLLM"]
