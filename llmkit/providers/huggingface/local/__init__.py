"""Local Hugging Face inference: transformers causal LMs and sentence-transformers embeddings.

Both are optional dependencies (the ``[local]`` extra) imported lazily, inside the
functions that need them, so importing this package (or :mod:`llmkit`) never imports
torch. Modules: ``loading`` (finding and checking models, offline loading), ``engine``
(the shared decoding batch), ``requests`` (one generation request), ``kv_cache`` (prefix
caches and batch cache surgery), ``embedder`` (the embedding batcher), ``detokenize``
(token ids to text deltas), ``delivery`` (results back to the caller's event loop),
``backend`` (the asyncio API). Stop strings are found by
:mod:`llmkit.core.stop_sequences`.
"""

from llmkit.core.stop_sequences import StopScanner, cut_at_stop
from llmkit.providers.huggingface.local.backend import LocalBackend
from llmkit.providers.huggingface.local.kv_cache import LocalKVCache
from llmkit.providers.huggingface.local.requests import LocalResult

__all__ = ["LocalBackend", "LocalKVCache", "LocalResult", "StopScanner", "cut_at_stop"]
