"""Check an OpenAI-compatible endpoint with the official `openai` Python SDK.

The SDK is used as any application would use it, so this catches wire-format
mistakes that hand-written tests share with the code they test.

Environment:
  OPENAI_BASE_URL    endpoint to check, e.g. http://127.0.0.1:8000/v1
  OPENAI_API_KEY     any value; the SDK refuses to start without one
  SDK_CHECK_MODELS   comma-separated models to run the chat checks on
                     (default: gpt-4o-mini)
  SDK_CHECK_EMBEDDING_MODEL   model for the embeddings checks
                     (default: text-embedding-3-small); empty skips them
  SDK_CHECK_COMPLETION_MODEL  model for the legacy completions checks
                     (default: gpt-3.5-turbo-instruct); empty skips them
  SDK_CHECK_ONLY     comma-separated prefixes: run only the checks whose
                     names start with one (e.g. `embeddings,completions`)
  SDK_CHECK_LIMITED_KEY  a client key of the proxy's `auth` allowed only
                     gpt-4o-mini with `rpm: 1`, unused so far; runs the
                     client-key checks (401, 429 as the SDK's errors)

Prints `ok   <check>` or `FAIL <check>: <reason>` per check, then
`N passed, M failed`, and exits non-zero if anything failed. Usually run by
scripts/sdk-check.sh, which starts the proxy and a mock upstream first.
"""

import base64
import json
import math
import os
import struct
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


def as_f32(values):
    """The values rounded to float32, as the wire's base64 form carries them."""
    return [struct.unpack("<f", struct.pack("<f", v))[0] for v in values]


def check_embedding_one(client, model):
    resp = client.embeddings.create(
        model=model, input="The quick brown fox", encoding_format="float"
    )
    expect(resp.object == "list", f"object {resp.object!r}")
    expect(len(resp.data) == 1, f"{len(resp.data)} embeddings for one input")
    item = resp.data[0]
    expect(item.index == 0, f"index {item.index!r}")
    expect(len(item.embedding) > 0, "empty embedding")
    expect(all(isinstance(x, float) for x in item.embedding), "non-float values")
    norm = math.sqrt(sum(x * x for x in item.embedding))
    expect(abs(norm - 1.0) < 1e-3, f"not a unit vector: norm {norm}")
    expect(resp.usage.prompt_tokens > 0, f"usage {resp.usage!r}")
    expect(resp.usage.total_tokens >= resp.usage.prompt_tokens, f"usage {resp.usage!r}")


def check_embedding_list(client, model):
    texts = ["first text", "second text", "third text"]
    resp = client.embeddings.create(
        model=model, input=texts, encoding_format="float", dimensions=256
    )
    expect(len(resp.data) == 3, f"{len(resp.data)} embeddings for three inputs")
    expect([d.index for d in resp.data] == [0, 1, 2], "indexes out of order")
    lengths = {len(d.embedding) for d in resp.data}
    expect(lengths == {256}, f"dimensions=256 gave lengths {lengths}")
    expect(resp.data[0].embedding != resp.data[1].embedding, "different inputs, same vector")


def check_embedding_base64(client, model):
    # base64 is little-endian float32s: the float call's numbers rounded to
    # float32. Asked for explicitly, the SDK hands over the string; with no
    # encoding_format it asks for base64 itself and decodes it.
    texts = ["alpha", "beta"]
    floats = client.embeddings.create(model=model, input=texts, encoding_format="float")
    want = [as_f32(d.embedding) for d in floats.data]
    raw = client.embeddings.create(model=model, input=texts, encoding_format="base64")
    expect(len(raw.data) == 2, f"{len(raw.data)} embeddings for two inputs")
    got = []
    for d in raw.data:
        expect(isinstance(d.embedding, str), f"not base64: {type(d.embedding).__name__}")
        data = base64.b64decode(d.embedding, validate=True)
        expect(len(data) % 4 == 0, f"{len(data)} bytes is not whole float32s")
        got.append(list(struct.unpack(f"<{len(data) // 4}f", data)))
    expect(got == want, "explicit base64 differs from the float call")
    default = client.embeddings.create(model=model, input=texts)
    decoded = [list(d.embedding) for d in default.data]
    expect(decoded == want, "the SDK's default (decoded base64) differs from the float call")


def check_text_completion(client, model):
    resp = client.completions.create(
        model=model, prompt=["Once upon a time", "In a galaxy"], max_tokens=50
    )
    expect(resp.object == "text_completion", f"object {resp.object!r}")
    expect(len(resp.choices) == 2, f"{len(resp.choices)} choices for two prompts")
    expect([c.index for c in resp.choices] == [0, 1], "indexes out of order")
    for c in resp.choices:
        expect(bool(c.text), f"empty text: {c!r}")
        expect(c.finish_reason in ("stop", "length"), f"finish_reason {c.finish_reason!r}")
    expect(resp.usage is not None and resp.usage.total_tokens > 0, f"usage {resp.usage!r}")


def check_text_completion_stream(client, model):
    stream = client.completions.create(
        model=model,
        prompt="Once upon a time",
        max_tokens=50,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish_reason, usage = [], None, None
    for chunk in stream:
        expect(chunk.object == "text_completion", f"chunk object {chunk.object!r}")
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.text:
                pieces.append(choice.text)
            if choice.finish_reason:
                finish_reason = choice.finish_reason
    expect(len(pieces) >= 2, f"only {len(pieces)} text pieces")
    expect("".join(pieces).strip(), "joined text is empty")
    expect(finish_reason in ("stop", "length"), f"finish_reason {finish_reason!r}")
    expect(usage is not None, "no usage chunk despite include_usage")


def check_unknown_model(client):
    try:
        client.chat.completions.create(model="no-such-model-sdk-check", messages=HELLO)
    except openai.NotFoundError as e:
        expect(e.code == "model_not_found", f"error code {e.code!r}, body {e.body!r}")
        return
    except openai.APIStatusError as e:
        raise CheckFailed(f"HTTP {e.status_code} ({type(e).__name__}), expected 404") from e
    raise CheckFailed("no error raised")


def check_client_keys(limited_key):
    base = os.environ["OPENAI_BASE_URL"]
    wrong = openai.OpenAI(base_url=base, api_key="sk-not-a-client-key", max_retries=0)
    try:
        wrong.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        raise CheckFailed("no error for an unknown key")
    except openai.AuthenticationError as e:
        expect(e.code == "invalid_api_key", f"401 code {e.code!r}")
    limited = openai.OpenAI(base_url=base, api_key=limited_key, max_retries=0)
    models = [m.id for m in limited.models.list()]
    expect(models == ["gpt-4o-mini"], f"the limited key lists {models}")
    # The listing used the key's one request of the minute.
    try:
        limited.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        raise CheckFailed("no 429 past rpm: 1")
    except openai.RateLimitError as e:
        expect(e.code == "rate_limit_exceeded", f"429 code {e.code!r}")
        h = e.response.headers
        expect(int(h.get("retry-after", "0")) >= 1, f"Retry-After {h.get('retry-after')!r}")
        expect(h.get("x-ratelimit-limit-requests") == "1", "x-ratelimit-limit-requests")
        expect(h.get("x-ratelimit-remaining-requests") == "0", "x-ratelimit-remaining-requests")
        expect(h.get("x-ratelimit-reset-requests", "").endswith("s"), "x-ratelimit-reset-requests")


def main():
    for var in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        if not os.environ.get(var):
            sys.exit(f"sdk_check: set {var}")
    models = [
        m.strip()
        for m in os.environ.get("SDK_CHECK_MODELS", "gpt-4o-mini").split(",")
        if m.strip()
    ]
    embedding_model = os.environ.get("SDK_CHECK_EMBEDDING_MODEL", "text-embedding-3-small")
    completion_model = os.environ.get("SDK_CHECK_COMPLETION_MODEL", "gpt-3.5-turbo-instruct")
    only = [p.strip() for p in os.environ.get("SDK_CHECK_ONLY", "").split(",") if p.strip()]
    # No retries: a retry would hide the very failures this is looking for.
    client = openai.OpenAI(max_retries=0, timeout=30)

    listed = models + [m for m in (embedding_model, completion_model) if m]
    checks = [("models.list", lambda: check_models_listed(client, listed))]
    for model in models:
        checks += [
            (f"chat[{model}]", lambda m=model: check_completion(client, m)),
            (f"stream[{model}]", lambda m=model: check_stream(client, m)),
            (f"tools[{model}]", lambda m=model: check_tool_call(client, m)),
            (f"tools-stream[{model}]", lambda m=model: check_tool_call_stream(client, m)),
        ]
    if embedding_model:
        m = embedding_model
        checks += [
            (f"embeddings[{m}]", lambda m=m: check_embedding_one(client, m)),
            (f"embeddings-list[{m}]", lambda m=m: check_embedding_list(client, m)),
            (f"embeddings-base64[{m}]", lambda m=m: check_embedding_base64(client, m)),
        ]
    if completion_model:
        m = completion_model
        checks += [
            (f"completions[{m}]", lambda m=m: check_text_completion(client, m)),
            (f"completions-stream[{m}]", lambda m=m: check_text_completion_stream(client, m)),
        ]
    checks.append(("unknown-model", lambda: check_unknown_model(client)))
    limited_key = os.environ.get("SDK_CHECK_LIMITED_KEY")
    if limited_key:
        checks.append(("client-keys", lambda: check_client_keys(limited_key)))
    if only:
        checks = [(n, c) for n, c in checks if any(n.startswith(p) for p in only)]

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
