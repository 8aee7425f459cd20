"""The HTTP layer: pooled sessions, the transport (retries, rate limits, bounded reads,
streaming), SSE / NDJSON parsing, and the mapping of HTTP answers to the error tree. It
imports only :mod:`llmkit.core` and :mod:`llmkit.calls`, and raises only ``LLMError``s."""
