"""The in-repo schema set (tests/servers/schemas): what it records, that it is complete for
the test servers' endpoints, the transcribed batch line formats, and (where the official
OpenAPI files are present) that regenerating it from them changes nothing."""

from __future__ import annotations

import json
import re

import pytest
from jsonschema import Draft202012Validator

from tests.servers import schemas as schema_set
from tests.servers import spec_validation
from tests.servers.schemas import generate
from tests.servers.spec_validation import ENDPOINTS, schema_errors, validator

BATCH_NAMES = ("BatchRequestInput", "BatchRequestOutput", "BatchRequestOutputResponse",
               "BatchRequestOutputError")


@pytest.mark.official_specs
def test_regenerating_from_the_official_files_changes_nothing() -> None:
    specs = spec_validation.specs_dir()
    missing = generate.missing_sources(specs)
    if missing:  # only reached on CI (CI=true): elsewhere tests/conftest.py deselects it
        pytest.fail(f"the official spec files are required on CI: {missing}", pytrace=False)
    found = [d for name in generate.SOURCES for d in generate.differences(name, specs)]
    assert found == [], (
        f"tests/servers/schemas differs from what {generate.GENERATOR} makes from {specs} "
        f"(run `python -m tests.servers.schemas.generate`):\n  " + "\n  ".join(found)
    )


def test_each_generated_file_records_its_source() -> None:
    for name in generate.SOURCES:
        text = generate.output_path(name).read_text(encoding="utf-8")
        header = json.loads(text)
        source = header["source"]
        assert header["generated_by"] == generate.GENERATOR
        assert source["file"] == generate.SOURCES[name].file
        assert re.fullmatch(r"[0-9a-f]{64}", source["sha256"])
        assert source["version"] and source["openapi"].startswith("3.")
        # Compact: one component per line, no descriptions or examples.
        assert text.count("\n") == len(header["components"]["schemas"]) + 2
        assert '"description":' not in text.replace('"description":{', "")
        assert '"example"' not in text and '"x-' not in text


def test_the_set_holds_every_schema_the_endpoints_name_and_each_compiles() -> None:
    named = {
        ref
        for rows in ENDPOINTS.values()
        for _method, _path, endpoint in rows
        for ref in (endpoint.request, endpoint.response, endpoint.stream_event,
                    endpoint.error, endpoint.final_event)
        if ref is not None and ref[0] != "inline"
    }
    assert len(named) > 30  # every endpoint of the four test-server flavours
    for spec, name in sorted(named):
        assert name in spec_validation.load_spec(spec)["components"]["schemas"], (spec, name)
        assert isinstance(validator(spec, name), Draft202012Validator)
    # Every $ref of every component resolves inside its set, and the whole set is a valid
    # JSON Schema once made strict (one root referencing every component).
    for spec in schema_set.SPECS:
        schemas = schema_set.load(spec)["components"]["schemas"]
        refs = set(re.findall(r'"\$ref":"#/components/schemas/([^"]+)"',
                              json.dumps(schemas, separators=(",", ":"))))
        assert refs - set(schemas) == set(), spec
        strict = spec_validation._StrictSchemas(spec)
        root = strict.build({"anyOf": [{"$ref": strict.ref(n, False)} for n in schemas]})
        Draft202012Validator.check_schema(root)


def test_openai_set_reaches_responses_files_batches_and_errors() -> None:
    schemas = schema_set.load("openai")["components"]["schemas"]
    for name in ("CreateResponse", "Response", "ResponseStreamEvent", "ResponseTextDeltaEvent",
                 "ResponseCompletedEvent", "OpenAIFile", "Batch", "CreateBatchRequest",
                 "ErrorResponse", "Error", "CreateChatCompletionStreamResponse",
                 "CreateEmbeddingResponse", "ListModelsResponse", *BATCH_NAMES):
        assert name in schemas, name
    events = {ref.rsplit("/", 1)[1] for ref in re.findall(
        r'"\$ref":"([^"]+)"', json.dumps(schemas["ResponseStreamEvent"], separators=(",", ":")))}
    assert len(events) > 40 and events <= set(schemas)
    # The discriminators stay in the set: an input message that fits two overlapping members
    # (EasyInputMessage, InputMessage) is valid (spec_validation checks it as anyOf).
    item = {"role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    assert schema_errors(("openai", "CreateResponse"), {"model": "m", "input": [item]}) is None


def test_minimal_keeps_validation_keywords_and_property_names_only() -> None:
    schema = {
        "type": "object", "description": "d", "title": "t", "x-oaiMeta": {}, "default": {},
        "properties": {
            "description": {"type": "string", "description": "a property named description"},
            "n": {"type": "integer", "minimum": 1, "example": 3, "nullable": True},
        },
        "required": ["description"],
        "discriminator": {"propertyName": "type"},
    }
    assert generate.minimal(schema, "S") == {
        "type": "object",
        "properties": {"description": {"type": "string"},
                       "n": {"type": "integer", "minimum": 1, "nullable": True}},
        "required": ["description"],
        "discriminator": {"propertyName": "type"},  # spec_validation reads it
    }
    with pytest.raises(ValueError, match=r"S/properties/n/contentSchema"):
        generate.minimal({"properties": {"n": {"contentSchema": {}}}}, "S")


def test_compare_names_the_schema_that_differs() -> None:
    text = generate.output_path("ollama").read_text(encoding="utf-8")
    assert generate.compare("ollama", text, text) == []
    doc = json.loads(text)
    schemas = doc["components"]["schemas"]
    schemas["ChatRequest"]["required"] = ["model"]
    del schemas["VersionResponse"]
    edited = text.replace(text.splitlines()[1], text.splitlines()[1] + "\n")
    assert generate.compare("ollama", text, edited) == ["ollama.json: same schemas, different layout"]
    doc["source"]["sha256"] = "0" * 64
    found = generate.compare("ollama", text, json.dumps(doc))
    assert found[0].startswith("ollama source: ") and "0000" in found[0]
    assert found[1:] == ["ollama schema VersionResponse: added", "ollama schema ChatRequest: changed"]


# --------------------------------------------------------------------------- batch lines

INPUT = ("openai", "BatchRequestInput")
OUTPUT = ("openai", "BatchRequestOutput")
CHAT_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "2+2?"}]}


def test_batch_input_url_lists_the_batch_endpoints() -> None:
    schemas = schema_set.load("openai")["components"]["schemas"]
    endpoints = schemas["CreateBatchRequest"]["properties"]["endpoint"]["enum"]
    assert schemas["BatchRequestInput"]["properties"]["url"]["enum"] == endpoints
    doc = json.loads((schema_set.HERE / "openai-batch.json").read_text(encoding="utf-8"))
    assert "platform.openai.com/docs/guides/batch" in doc["transcribed_from"][0]


def test_batch_input_line() -> None:
    line = {"custom_id": "request-1", "method": "POST", "url": "/v1/chat/completions",
            "body": CHAT_BODY}
    assert schema_errors(INPUT, line) is None
    assert schema_errors(INPUT, {**line, "url": "/v1/responses"}) is None
    for bad in ({**line, "method": "GET"}, {**line, "url": "/v1/chat"},
                {k: v for k, v in line.items() if k != "custom_id"}, {**line, "id": "x"},
                {**line, "body": "{}"}):
        assert schema_errors(INPUT, bad) is not None, bad


def test_batch_output_and_error_lines() -> None:
    body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": []}
    ok = {"id": "batch_req_1", "custom_id": "request-1", "error": None,
          "response": {"status_code": 200, "request_id": "req_1", "body": body}}
    assert schema_errors(OUTPUT, ok) is None
    http_error = {**ok, "response": {"status_code": 400, "request_id": "req_2",
                                     "body": {"error": {"message": "bad", "type": "x"}}}}
    assert schema_errors(OUTPUT, http_error) is None
    failed = {**ok, "response": None, "error": {"code": "batch_expired", "message": "late"}}
    assert schema_errors(OUTPUT, failed) is None
    for bad in ({k: v for k, v in ok.items() if k != "error"},
                {**ok, "response": {"status_code": 200, "body": body}},
                {**ok, "response": {**ok["response"], "headers": {}}},  # type: ignore[dict-item]
                {**failed, "error": {"code": "x"}}, {**ok, "extra": 1}):
        assert schema_errors(OUTPUT, bad) is not None, bad
