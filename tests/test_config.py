from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pydantic
import pytest

from llmkit import (
    ConfigError,
    LLMConfig,
    load_config,
    merge_config_with_defaults,
    provider_defaults,
)

KEY = "sk-test-0123456789abcdefSECRET"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(30, 30.0), (1.5, 1.5), ("30s", 30.0), ("2m", 120.0), ("500ms", 0.5), ("1h", 3600.0),
     (dt.timedelta(seconds=7), 7.0), ("45", 45.0)],
)
def test_timeout_forms(value: object, seconds: float) -> None:
    assert LLMConfig(provider="openai", model="m", timeout=value).timeout == seconds


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_tokens", 0), ("temperature", 2.5), ("temperature", -0.1), ("top_p", 1.5),
     ("timeout", "soon"), ("max_concurrency", 0), ("max_retries", -1)],
)
def test_out_of_range_names_the_field(field: str, value: object) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        LLMConfig(provider="openai", model="m", **{field: value})
    assert field in str(info.value)


def test_key_never_shown() -> None:
    cfg = LLMConfig(provider="openai", model="m", api_key=KEY)
    assert KEY not in repr(cfg)
    assert KEY not in str(cfg)
    assert KEY not in json.dumps(cfg.model_dump(mode="json"))
    assert KEY not in str(cfg.model_dump())
    assert KEY not in cfg.model_dump_json()
    assert cfg.key() == KEY


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    cfg = LLMConfig.from_env("openai", model="gpt-x")
    assert cfg.key() == KEY
    assert cfg.base_url == "http://127.0.0.1:9/v1"
    assert cfg.model == "gpt-x"
    assert cfg.timeout == provider_defaults("openai")["timeout"]
    # no sampling defaults: what the user did not set is not sent
    assert (cfg.max_tokens, cfg.temperature, cfg.top_p) == (None, None, None)


@pytest.mark.parametrize("name", ["openai", "ollama", "huggingface", "mock", "other"])
def test_provider_defaults_have_no_sampling_values(name: str) -> None:
    defaults = provider_defaults(name)
    assert not {"max_tokens", "temperature", "top_p"} & defaults.keys()
    assert defaults["timeout"] > 0 and defaults["max_retries"] >= 0


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"OLLAMA_HOST": "127.0.0.1"}, "http://127.0.0.1:11434"),
        ({"OLLAMA_HOST": "0.0.0.0:1234"}, "http://127.0.0.1:1234"),
        ({"OLLAMA_HOST": "https://ollama.example.com"}, "https://ollama.example.com:443"),
        ({"OLLAMA_HOST": "http://box:8080"}, "http://box:8080"),
        ({"OLLAMA_BASE_URL": "http://a:1", "OLLAMA_HOST": "b"}, "http://a:1"),
    ],
)
def test_ollama_host_forms(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    monkeypatch.delenv("OLLAMA_BASE_URL", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert LLMConfig.from_env("ollama").base_url == expected


def test_hf_token_env_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_fromhftoken000000")
    monkeypatch.setenv("HUGGINGFACE_API_TOKEN", "hf_fromapitoken00000")
    assert LLMConfig.from_env("huggingface").key() == "hf_fromapitoken00000"
    monkeypatch.delenv("HUGGINGFACE_API_TOKEN")
    assert LLMConfig.from_env("huggingface").key() == "hf_fromhftoken000000"


def test_merge_with_defaults() -> None:
    merged = merge_config_with_defaults(
        "ollama", {"model": "qwen", "timeout": None, "extra": {"keep_alive": "5m"}}
    )
    assert merged["model"] == "qwen"
    assert merged["timeout"] == provider_defaults("ollama")["timeout"]
    assert merged["extra"] == {"keep_alive": "5m"}
    assert merged["provider"] == "ollama"
    # defaults are copies
    provider_defaults("ollama")["model"] = "changed"
    assert provider_defaults("ollama")["model"] != "changed"


def test_load_yaml_with_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", KEY)
    monkeypatch.delenv("UNSET_MODEL", raising=False)
    p = tmp_path / "c.yaml"
    p.write_text(
        "llm:\n  provider: openai\n  model: ${UNSET_MODEL:-gpt-4o-mini}\n"
        "  api_key: ${MY_KEY}\n  timeout: 30s\n  extra:\n    debug: true\n"
    )
    cfg = load_config(p)
    assert cfg.model == "gpt-4o-mini"
    assert cfg.key() == KEY
    assert cfg.timeout == 30.0
    assert cfg.extra == {"debug": True}


def test_load_json_top_level(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"provider": "ollama", "model": "llama3.2", "timeout": "2m"}))
    cfg = load_config(p, section=None)
    assert (cfg.provider, cfg.model, cfg.timeout) == ("ollama", "llama3.2", 120.0)


def test_unset_var_without_default_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    p = tmp_path / "c.yaml"
    p.write_text("llm:\n  provider: openai\n  api_key: ${NOPE_NOT_SET}\n")
    with pytest.raises(ConfigError, match="NOPE_NOT_SET"):
        load_config(p)


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    p = tmp_path / "evil.yaml"
    p.write_text("llm: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(p)


def test_interpolation_is_text_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a value that looks like YAML or another ${VAR} is not parsed again
    monkeypatch.setenv("TRICKY", "${OTHER} !!python/object:os.system")
    monkeypatch.setenv("OTHER", "no")
    p = tmp_path / "c.yaml"
    p.write_text("llm:\n  provider: mock\n  model: ${TRICKY}\n")
    assert load_config(p).model == "${OTHER} !!python/object:os.system"


def test_missing_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
