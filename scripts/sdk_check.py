"""Check an OpenAI-compatible endpoint with the official `openai` Python SDK.

The SDK is used as any application would use it, so this catches wire-format
mistakes that hand-written tests share with the code they test.

Environment:
  OPENAI_BASE_URL    endpoint to check, e.g. http://127.0.0.1:8000/v1
  OPENAI_API_KEY     any value; the SDK refuses to start without one
  SDK_CHECK_MODELS   comma-separated models to run the chat checks on
                     (default: gpt-4o-mini)

Prints `ok   <check>` or `FAIL <check>: <reason>` per check, then
`N passed, M failed`, and exits non-zero if anything failed. Usually run by
scripts/sdk-check.sh, which starts the proxy and a mock upstream first.
"""

import json
import os
import sys

import openai

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}
HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]
WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


class CheckFailed(Exception):
    pass


def expect(condition, reason):
    if not condition:
        raise CheckFailed(reason)


def check_models_listed(client, models):
    ids = [m.id for m in client.models.list()]
    missing = [m for m in models if m not in ids]
    expect(not missing, f"{missing} not in {ids}")


def check_completion(client, model):
    resp = client.chat.completions.create(model=model, messages=HELLO)
    choice = resp.choices[0]
    expect(bool(choice.message.content), f"empty content: {choice.message!r}")
    expect(choice.finish_reason == "stop", f"finish_reason {choice.finish_reason!r}")
    expect(resp.usage is not None, "no usage")
    expect(resp.usage.total_tokens > 0, f"usage {resp.usage!r}")


def check_stream(client, model):
    stream = client.chat.completions.create(
        model=model,
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish_reason, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish_reason = choice.finish_reason
    expect(len(pieces) >= 2, f"only {len(pieces)} content deltas")
    expect("".join(pieces).strip(), "joined content is empty")
    expect(finish_reason == "stop", f"finish_reason {finish_reason!r}")
    expect(usage is not None, "no usage chunk despite include_usage")


def parse_weather_call(name, arguments):
    expect(name == "get_weather", f"tool name {name!r}")
    try:
        args = json.loads(arguments)
    except ValueError as e:
        raise CheckFailed(f"arguments are not JSON ({e}): {arguments!r}") from e
    expect(isinstance(args, dict), f"arguments are not an object: {arguments!r}")


def check_tool_call(client, model):
    resp = client.chat.completions.create(
        model=model, messages=WEATHER, tools=[WEATHER_TOOL]
    )
    choice = resp.choices[0]
    expect(choice.finish_reason == "tool_calls", f"finish_reason {choice.finish_reason!r}")
    calls = choice.message.tool_calls or []
    expect(len(calls) >= 1, "no tool_calls")
    parse_weather_call(calls[0].function.name, calls[0].function.arguments)


def check_tool_call_stream(client, model):
    stream = client.chat.completions.create(
        model=model, messages=WEATHER, tools=[WEATHER_TOOL], stream=True
    )
    # Tool calls arrive in fragments keyed by index: name first, then pieces
    # of the arguments JSON that only parse once joined.
    calls, finish_reason = {}, None
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                slot = calls.setdefault(call.index, {"name": "", "arguments": ""})
                if call.function and call.function.name:
                    slot["name"] += call.function.name
                if call.function and call.function.arguments:
                    slot["arguments"] += call.function.arguments
            if choice.finish_reason:
                finish_reason = choice.finish_reason
    expect(finish_reason == "tool_calls", f"finish_reason {finish_reason!r}")
    expect(0 in calls, f"no tool call with index 0: {calls!r}")
    parse_weather_call(calls[0]["name"], calls[0]["arguments"])


def check_unknown_model(client):
    try:
        client.chat.completions.create(model="no-such-model-sdk-check", messages=HELLO)
    except openai.NotFoundError as e:
        expect(e.code == "model_not_found", f"error code {e.code!r}, body {e.body!r}")
        return
    except openai.APIStatusError as e:
        raise CheckFailed(f"HTTP {e.status_code} ({type(e).__name__}), expected 404") from e
    raise CheckFailed("no error raised")


def main():
    for var in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        if not os.environ.get(var):
            sys.exit(f"sdk_check: set {var}")
    models = [
        m.strip()
        for m in os.environ.get("SDK_CHECK_MODELS", "gpt-4o-mini").split(",")
        if m.strip()
    ]
    # No retries: a retry would hide the very failures this is looking for.
    client = openai.OpenAI(max_retries=0, timeout=30)

    checks = [("models.list", lambda: check_models_listed(client, models))]
    for model in models:
        checks += [
            (f"chat[{model}]", lambda m=model: check_completion(client, m)),
            (f"stream[{model}]", lambda m=model: check_stream(client, m)),
            (f"tools[{model}]", lambda m=model: check_tool_call(client, m)),
            (f"tools-stream[{model}]", lambda m=model: check_tool_call_stream(client, m)),
        ]
    checks.append(("unknown-model", lambda: check_unknown_model(client)))

    failed = 0
    for name, check in checks:
        try:
            check()
        except CheckFailed as e:
            failed += 1
            print(f"FAIL {name}: {e}", flush=True)
        except Exception as e:  # any SDK error is a failed check, not a crash
            failed += 1
            reason = " ".join(str(e).split())[:300]
            print(f"FAIL {name}: {type(e).__name__}: {reason}", flush=True)
        else:
            print(f"ok   {name}", flush=True)
    print(f"{len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
