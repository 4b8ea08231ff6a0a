"""The official `openai` Python package against `jielong serve`.

Run by tests/serve.rs as `python3 tests/serve_client.py BASE_URL MODEL`: a plain
answer, a stream, a tool call, n choices and log-probabilities. Prints one line per
check; any failure raises (non-zero exit).
"""

import json
import sys

import openai


def main() -> None:
    base_url, model = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=300)
    question = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]

    reply = client.chat.completions.create(model=model, messages=question, temperature=0, max_tokens=16)
    assert "Paris" in (reply.choices[0].message.content or ""), reply
    assert reply.usage is not None and reply.usage.prompt_tokens > 0, reply
    print("python openai: plain answer ok")

    stream = client.chat.completions.create(
        model=model,
        messages=question,
        temperature=0,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
    assert "Paris" in text, text
    assert usage is not None and usage.completion_tokens > 0, usage
    print("python openai: stream ok")

    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The current weather in a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the weather in Paris right now?"}],
        tools=tools,
        tool_choice="required",
        temperature=0,
        max_tokens=80,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", reply
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather", call
    assert "Paris" in json.loads(call.function.arguments)["city"], call
    print("python openai: tool call ok")

    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Name a fruit."}],
        n=2,
        temperature=0.9,
        seed=1,
        max_tokens=8,
    )
    assert [c.index for c in reply.choices] == [0, 1], reply
    print("python openai: n ok")

    reply = client.chat.completions.create(
        model=model, messages=question, temperature=0, max_tokens=4, logprobs=True, top_logprobs=3
    )
    entries = reply.choices[0].logprobs.content
    assert entries and all(len(e.top_logprobs) == 3 and e.logprob <= 0 for e in entries), entries
    print("python openai: logprobs ok")


if __name__ == "__main__":
    main()
