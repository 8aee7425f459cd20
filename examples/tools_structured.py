"""Tool calling and structured output.

Run:  python examples/tools_structured.py

* Structured output: pass a pydantic model class as ``response_format``; the reply is
  validated into it (``response.parsed``).
* Tools: plain typed Python functions (or pydantic classes, or OpenAI-style dicts) are
  turned into tool definitions; the model's calls come back as ``response.tool_calls``
  with decoded ``arguments``; we run them and send the results back.

With ``OPENAI_BASE_URL`` set (any OpenAI-compatible server, ``OPENAI_API_KEY`` if it
needs one; ``--model`` defaults to ``gpt-4o-mini``) this talks to that server. Otherwise it
uses the built-in ``mock`` provider, which can do structured output (its reply is JSON
here) but has no tool calling, so the tool part only shows the generated definitions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

from pydantic import BaseModel

from llmkit import LLMConfig, Message, create_llm, to_openai_tools


class City(BaseModel):
    name: str
    country: str
    population_millions: float


def get_weather(city: str, unit: str = "celsius") -> str:
    """Current weather in a city.

    The docstring's first line becomes the tool description.
    """
    return json.dumps({"city": city, "temperature": 21, "unit": unit, "sky": "clear"})


TOOLS = {"get_weather": get_weather}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url")
    parser.add_argument("--model", default="gpt-4o-mini")
    args = parser.parse_args()

    if args.base_url or os.environ.get("OPENAI_BASE_URL"):
        config = LLMConfig.from_env("openai", model=args.model, base_url=args.base_url)
    else:
        example = City(name="Lisbon", country="Portugal", population_millions=0.55)
        config = LLMConfig(
            provider="mock", model="mock", extra={"responses": [example.model_dump_json()]}
        )

    async with create_llm(config) as llm:
        print(f"provider={config.provider}")

        # --- structured output
        response = await llm.chat("Name a European capital city.", response_format=City)
        city: City = response.parsed
        print(f"structured: {city!r}")

        # --- tools
        print("tool definition:", json.dumps(to_openai_tools([get_weather])[0]["function"]))
        if config.provider == "mock":
            print("tools: the mock provider does not call tools; set OPENAI_BASE_URL to run the loop")
            return
        messages: list[Message | dict[str, str]] = [
            {"role": "user", "content": "What's the weather in Lisbon?"}
        ]
        for _ in range(5):  # a bounded tool loop
            response = await llm.chat(messages, tools=[get_weather])
            if not response.tool_calls:
                print("answer:", response.content)
                break
            messages.append(
                Message(role="assistant", content=response.content, tool_calls=response.tool_calls)
            )
            for call in response.tool_calls:
                result = TOOLS[call.name](**call.arguments)
                print(f"tool call: {call.name}({call.arguments}) -> {result}")
                messages.append(Message(role="tool", content=result, tool_call_id=call.id))


if __name__ == "__main__":
    asyncio.run(main())
