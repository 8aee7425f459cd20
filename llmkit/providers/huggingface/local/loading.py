"""Finding, checking and loading local models, always offline.

A model is a local directory, or a hub id already in the local Hugging Face cache; local
mode never downloads. Before any weights are read, the directory's ``config.json`` (and
sentence-transformers files) tell whether it is a model of the kind the call needs: a
missing path is a :class:`ConfigError`, a model of the wrong kind a
:class:`NotSupportedError`.
"""

from __future__ import annotations

import inspect
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from llmkit.core.errors import ConfigError, NotSupportedError

__all__ = [
    "LoadedLM",
    "context_length_of",
    "load_causal_lm",
    "load_sentence_transformer",
    "resolve_device",
    "resolve_model_dir",
]

PROVIDER: Final = "huggingface"
DTYPES: Final = ("auto", "float32", "float16", "bfloat16")
_CAUSAL_SUFFIXES: Final = ("ForCausalLM", "LMHeadModel")
_ST_FILES: Final = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


@dataclass
class LoadedLM:
    """A causal LM with its tokenizer and what decoding needs to know about them."""

    model: Any
    tokenizer: Any
    device: str
    dtype: str
    context_length: int | None
    cache_kwarg: str = "past_key_values"
    logits_kwarg: str | None = None
    eos_ids: frozenset[int] = frozenset()
    pad_id: int = 0
    has_template: bool = False
    token: object = field(default_factory=object)  # identifies this load (for KV caches)
    tok_lock: threading.Lock = field(default_factory=threading.Lock)


def resolve_model_dir(model: str) -> Path:
    """The local directory of ``model`` (a path, or a hub id in the local cache only)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ConfigError(f"local model {model!r} is a file, not a model directory", provider=PROVIDER)
    try:
        from huggingface_hub import snapshot_download

        cached = snapshot_download(model, local_files_only=True)
    except Exception:  # not a valid repo id, or not in the cache
        cached = None
    if cached is None or not Path(cached).is_dir():
        raise ConfigError(
            f"local model {model!r} not found: no such directory, and not in the local "
            "Hugging Face cache (local mode never downloads)",
            provider=PROVIDER,
        )
    return Path(cached)


def _read_config(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"unreadable config.json in {str(directory)!r}: {exc}", provider=PROVIDER) from None
    return data if isinstance(data, dict) else None


def _architectures(config: dict[str, Any]) -> list[str]:
    archs = config.get("architectures") or []
    return [str(a) for a in archs] if isinstance(archs, list) else []


def check_causal_lm(model: str, directory: Path) -> dict[str, Any]:
    """Raise unless ``directory`` holds a transformers model with a causal-LM head."""
    config = _read_config(directory)
    if config is None:
        raise ConfigError(
            f"local model {model!r} is not a transformers model (no config.json)", provider=PROVIDER
        )
    archs = _architectures(config)
    if archs:
        causal = any(a.endswith(_CAUSAL_SUFFIXES) for a in archs)
    else:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        causal = config.get("model_type") in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if not causal:
        kind = ", ".join(archs) or str(config.get("model_type") or "unknown")
        embedder = any((directory / f).exists() for f in _ST_FILES)
        what = "an embedding model" if embedder else f"not a causal language model ({kind})"
        raise NotSupportedError(
            f"local model {model!r} is {what}; it cannot generate text", provider=PROVIDER
        )
    return config


def check_embedding_model(model: str, directory: Path) -> None:
    """Raise unless ``directory`` holds a sentence-transformers model or a text encoder."""
    if any((directory / f).exists() for f in _ST_FILES):
        return
    config = _read_config(directory)
    if config is None:
        raise ConfigError(
            f"local model {model!r} is neither a sentence-transformers nor a transformers model",
            provider=PROVIDER,
        )
    archs = _architectures(config)
    if not archs or any(a.endswith((*_CAUSAL_SUFFIXES, "ForConditionalGeneration")) for a in archs):
        kind = ", ".join(archs) or str(config.get("model_type") or "unknown")
        raise NotSupportedError(
            f"local model {model!r} is not an embedding model ({kind}); set "
            "extra['embedding_model'] to a sentence-transformers model",
            provider=PROVIDER,
        )


def context_length_of(config: dict[str, Any]) -> int | None:
    text = config.get("text_config") or config
    value = text.get("max_position_embeddings") or text.get("n_positions")
    return int(value) if isinstance(value, int) and value > 0 else None


def resolve_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _torch_dtype(dtype: str | None, device: str) -> Any:
    """A torch dtype, or the string "auto" (use the checkpoint's dtype)."""
    import torch

    if dtype == "auto":
        return "auto"
    if dtype is None:
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.startswith("mps"):
            return torch.float16
        return torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    eos: set[int] = set()
    for value in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            eos.add(value)
        elif isinstance(value, (list, tuple)):
            eos.update(int(v) for v in value)
    return eos


def load_causal_lm(model: str, *, device: str, dtype: str | None, trust_remote_code: bool) -> LoadedLM:
    """Check, then load a causal LM and its tokenizer from local files only."""
    directory = resolve_model_dir(model)
    config = check_causal_lm(model, directory)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(
        directory, trust_remote_code=trust_remote_code, local_files_only=True
    )
    kwargs: dict[str, Any] = {
        "trust_remote_code": trust_remote_code,
        "local_files_only": True,
        "dtype": _torch_dtype(dtype, device),
    }
    if any(directory.glob("*.safetensors")):
        kwargs["use_safetensors"] = True
    lm: Any = AutoModelForCausalLM.from_pretrained(directory, **kwargs)
    lm.to(device)
    lm.eval()

    eos = _eos_ids(lm, tokenizer)
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        elif getattr(tokenizer, "unk_token", None) is not None:
            tokenizer.pad_token = tokenizer.unk_token
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = min(eos) if eos else 0
    params = inspect.signature(lm.forward).parameters
    return LoadedLM(
        model=lm,
        tokenizer=tokenizer,
        device=device,
        dtype=str(lm.dtype).removeprefix("torch."),
        context_length=context_length_of(config),
        cache_kwarg="cache" if "cache" in params else "past_key_values",
        logits_kwarg="logits_to_keep" if "logits_to_keep" in params else None,
        eos_ids=frozenset(eos),
        pad_id=int(pad_id),
        has_template=bool(getattr(tokenizer, "chat_template", None)),
    )


def load_sentence_transformer(
    model: str, *, device: str, dtype: str | None, trust_remote_code: bool
) -> Any:
    """Check, then load a sentence-transformers model from local files only."""
    directory = resolve_model_dir(model)
    check_embedding_model(model, directory)
    from sentence_transformers import SentenceTransformer

    device = resolve_device(device)
    kwargs: dict[str, Any] = {}
    if dtype not in (None, "auto", "float32"):
        kwargs["model_kwargs"] = {"dtype": _torch_dtype(dtype, device)}
    return SentenceTransformer(
        str(directory),
        device=device,
        trust_remote_code=trust_remote_code,
        local_files_only=True,
        **kwargs,
    )
