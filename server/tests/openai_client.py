"""Drives a running ryzanstein server with the official `openai` Python client.

usage: openai_client.py BASE_URL MODEL
Exits non-zero (with an assertion message) on the first thing that is not as an OpenAI client
expects. Run by server/tests/openai_client.rs against the real server binary.
"""

import json
import sys

import openai
import pydantic
from openai import OpenAI

QUESTION = "What is the capital of France?"


def main() -> None:
    base_url, model = sys.argv[1], sys.argv[2]
    client = OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=600)

    models = client.models.list()
    assert [m.id for m in models.data] == [model], models

    # Chat, non-streaming.
    chat = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=8,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert chat.object == "chat.completion", chat
    assert chat.id.startswith("chatcmpl-"), chat.id
    assert chat.model == model, chat.model
    assert len(chat.choices) == 1, chat.choices
    choice = chat.choices[0]
    assert choice.message.role == "assistant", choice
    assert choice.message.content, choice
    assert choice.finish_reason == "length", choice.finish_reason
    assert chat.usage.completion_tokens == 8, chat.usage
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + 8, chat.usage

    # Chat, streaming, with the usage chunk.
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=8,
        temperature=0,
        extra_body={"ignore_eos": True},
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage, roles = [], None, None, []
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk", chunk
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.role:
                roles.append(c.delta.role)
            if c.delta.content:
                pieces.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    assert roles == ["assistant"], roles
    assert "".join(pieces) == choice.message.content, (pieces, choice.message.content)
    assert finish == "length", finish
    assert usage is not None and usage.completion_tokens == 8, usage

    # Completions, non-streaming and streaming.
    comp = client.completions.create(
        model=model, prompt="The capital of France is", max_tokens=5, temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert comp.object == "text_completion", comp
    assert comp.choices[0].text, comp
    assert comp.choices[0].finish_reason == "length", comp
    assert comp.usage.completion_tokens == 5, comp.usage
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=model, prompt="The capital of France is", max_tokens=5, temperature=0,
            extra_body={"ignore_eos": True}, stream=True,
        )
        if c.choices
    )
    assert streamed == comp.choices[0].text, (streamed, comp.choices[0].text)

    # Structured output: the client's own parse() with a pydantic model (a strict json_schema).
    class Capital(pydantic.BaseModel):
        city: str
        population: int

    parsed = client.chat.completions.parse(
        model=model,
        messages=[{"role": "user", "content": QUESTION + " Answer in JSON."}],
        response_format=Capital,
        max_tokens=40,
        temperature=0,
    )
    assert parsed.choices[0].finish_reason == "stop", parsed
    assert isinstance(parsed.choices[0].message.parsed, Capital), parsed

    # A required tool call, whole and streamed, as the client reads them.
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"], "additionalProperties": False}}}]
    ask = dict(model=model, messages=[{"role": "user", "content": "Weather in Paris?"}],
               tools=tools, tool_choice="required", max_tokens=40, temperature=0)
    called = client.chat.completions.create(**ask)
    assert called.choices[0].finish_reason == "tool_calls", called
    call = called.choices[0].message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_"), call
    assert call.function.name == "get_weather", call
    assert isinstance(json.loads(call.function.arguments)["city"], str), call
    name, args, finish = None, "", None
    for chunk in client.chat.completions.create(**ask, stream=True):
        for c in chunk.choices:
            for d in c.delta.tool_calls or []:
                assert d.index == 0, d
                name = name or d.function.name
                args += d.function.arguments or ""
            finish = c.finish_reason or finish
    assert (name, args, finish) == ("get_weather", call.function.arguments, "tool_calls"), (
        name, args, finish)

    # n choices.
    several = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": QUESTION}], n=2, max_tokens=4,
        seed=1,
    )
    assert [c.index for c in several.choices] == [0, 1], several

    # Errors surface as the client's typed exceptions.
    try:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], temperature=5
        )
        raise AssertionError("temperature=5 was accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400, e
        assert e.body["param"] == "temperature", e.body
    try:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("an unknown model was accepted")
    except openai.NotFoundError as e:
        assert e.body["code"] == "model_not_found", e.body

    print("openai client: all checks passed")


if __name__ == "__main__":
    main()
