"""Modelfile text -> /api/create fields."""

from __future__ import annotations

from typing import Any

import pytest

from llmkit import InvalidRequestError
from llmkit.providers.ollama.client import parse_modelfile

CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("from only", "FROM llama3.2", {"from": "llama3.2"}),
    ("case-insensitive", "from llama3.2\nsystem hi there", {"from": "llama3.2", "system": "hi there"}),
    ("comments and blanks", "# header\n\nFROM m\n  # indented comment\n", {"from": "m"}),
    (
        "typed parameters",
        "FROM m\nPARAMETER temperature 0.7\nPARAMETER num_ctx 4096\nPARAMETER seed 42\n"
        "PARAMETER penalize_newline false\nPARAMETER use_mmap TRUE\nPARAMETER top_p 1",
        {
            "from": "m",
            "parameters": {
                "temperature": 0.7,
                "num_ctx": 4096,
                "seed": 42,
                "penalize_newline": False,
                "use_mmap": True,
                "top_p": 1.0,
            },
        },
    ),
    (
        "stop repeats into a list",
        'FROM m\nPARAMETER stop "<|eot_id|>"\nPARAMETER stop User:\nPARAMETER stop "a b"',
        {"from": "m", "parameters": {"stop": ["<|eot_id|>", "User:", "a b"]}},
    ),
    ("single stop is a list", "FROM m\nPARAMETER stop ###", {"from": "m", "parameters": {"stop": ["###"]}}),
    (
        "unknown parameter inferred",
        "FROM m\nPARAMETER custom_int 3\nPARAMETER custom_float 0.5\nPARAMETER custom_str abc",
        {"from": "m", "parameters": {"custom_int": 3, "custom_float": 0.5, "custom_str": "abc"}},
    ),
    ("quoted system", 'FROM m\nSYSTEM "You are \\"Bob\\"."', {"from": "m", "system": 'You are "Bob".'}),
    (
        "triple-quoted template",
        'FROM m\nTEMPLATE """{{ if .System }}{{ .System }}\n{{ end }}{{ .Prompt }}"""',
        {"from": "m", "template": "{{ if .System }}{{ .System }}\n{{ end }}{{ .Prompt }}"},
    ),
    (
        "triple-quoted on one line",
        'FROM m\nSYSTEM """one line"""',
        {"from": "m", "system": "one line"},
    ),
    (
        "triple-quoted opening on its own line",
        'FROM m\nSYSTEM """\nline one\nline two\n"""',
        {"from": "m", "system": "\nline one\nline two\n"},
    ),
    (
        "triple-quoted keeps # lines",
        'FROM m\nSYSTEM """# not a comment\nFROM not an instruction"""',
        {"from": "m", "system": "# not a comment\nFROM not an instruction"},
    ),
    (
        "messages",
        'FROM m\nMESSAGE system be nice\nMESSAGE user "Is it blue?"\nMESSAGE Assistant """Yes,\nit is."""',
        {
            "from": "m",
            "messages": [
                {"role": "system", "content": "be nice"},
                {"role": "user", "content": "Is it blue?"},
                {"role": "assistant", "content": "Yes,\nit is."},
            ],
        },
    ),
    ("one license is a string", 'FROM m\nLICENSE """MIT\nCopyright"""', {"from": "m", "license": "MIT\nCopyright"}),
    (
        "repeated license is a list",
        "FROM m\nLICENSE MIT\nLICENSE Apache-2.0",
        {"from": "m", "license": ["MIT", "Apache-2.0"]},
    ),
    (
        "adapter",
        "FROM m\nADAPTER ./lora/adapter.gguf",
        {"from": "m", "adapters": {"adapter.gguf": "./lora/adapter.gguf"}},
    ),
    ("later value wins", "FROM a\nFROM b\nSYSTEM x\nSYSTEM y", {"from": "b", "system": "y"}),
    ("renderer and parser", "FROM m\nRENDERER qwen3\nPARSER qwen3", {"from": "m", "renderer": "qwen3", "parser": "qwen3"}),
    ("CRLF line endings", "FROM m\r\nPARAMETER top_k 5\r\n", {"from": "m", "parameters": {"top_k": 5}}),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_parse_modelfile(text: str, expected: dict[str, Any]) -> None:
    assert parse_modelfile(text) == expected


ERRORS: list[tuple[str, str, str]] = [
    ("unknown instruction", "FROM m\nFOO bar", r"line 2.*FOO"),
    ("bad int", "FROM m\n\nPARAMETER num_ctx big", r"line 3.*num_ctx.*integer"),
    ("bad float", "PARAMETER temperature hot", r"line 1.*temperature.*number"),
    ("bad bool", "PARAMETER numa maybe", r"line 1.*numa"),
    ("parameter without value", "FROM m\nPARAMETER seed", r"line 2"),
    ("unterminated triple quote", 'FROM m\nSYSTEM """never closed\nstill open', r"line 2.*unterminated"),
    ("unterminated quote", 'FROM m\nSYSTEM "oops', r"line 2.*unterminated"),
    ("bad message role", "MESSAGE robot hello", r"line 1.*robot"),
    ("from without value", "FROM", r"line 1.*FROM"),
]


@pytest.mark.parametrize(("text", "pattern"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_parse_modelfile_errors(text: str, pattern: str) -> None:
    with pytest.raises(InvalidRequestError, match=pattern):
        parse_modelfile(text)
