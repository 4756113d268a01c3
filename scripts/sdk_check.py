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
  SDK_CHECK_RESPONSES_MODELS  comma-separated models to run the Responses
                     checks (`responses.*`) and the openai-agents checks
                     (`agents.*`) on (default: SDK_CHECK_MODELS); the
                     upstream must call the first function tool offered and,
                     given its output, answer text quoting it (as
                     llm-proxy-mock does)
  SDK_CHECK_RESPONSES_NATIVE  a model on a native Responses provider: runs
                     responses.retrieve (empty skips it)
  SDK_CHECK_RESPONSES_TRANSLATED  comma-separated models on translating
                     providers: runs responses.previous_id_refused on each
  SDK_CHECK_FAILOVER  comma-separated MODEL=PROVIDER: a model whose first
                     provider fails before its first output event, and the
                     provider expected to answer on the second attempt
                     (responses.failover[MODEL], JSON and stream)

The agents checks need the `openai-agents` package; without it they fail.

Prints `ok   <check>` or `FAIL <check>: <reason>` per check, then
`N passed, M failed`, and exits non-zero if anything failed. Usually run by
scripts/sdk-check.sh, which starts the proxy and a mock upstream first.
"""

import asyncio
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


WEATHER_FUNCTION = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}
# What the weather tool "returns"; the upstream quotes it in its final answer.
WEATHER_OUTPUT = "sunny, 21C"

# A text answer's events, in the spec's order: one prelude, one message item.
TEXT_EVENT_ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def expect_text_response(resp, what="output_text"):
    expect(resp.object == "response", f"object {resp.object!r}")
    expect(resp.id.startswith("resp_"), f"id {resp.id!r}")
    expect(resp.status == "completed", f"status {resp.status!r}")
    expect(resp.output and resp.output[0].type == "message", f"output {resp.output!r}")
    expect(bool(resp.output_text), f"empty {what}")
    expect(resp.usage is not None and resp.usage.total_tokens > 0, f"usage {resp.usage!r}")
    expect(
        resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens,
        f"usage does not add up: {resp.usage!r}",
    )


def check_responses_string(client, model):
    resp = client.responses.create(model=model, input="Say hello in one short sentence.")
    expect_text_response(resp)


def check_responses_instructions(client, model):
    told = "Answer like a pirate"
    resp = client.responses.create(
        model=model, input="Say hello in one short sentence.", instructions=told
    )
    expect_text_response(resp)
    expect(resp.instructions == told, f"instructions echoed as {resp.instructions!r}")
    # The mock quotes the system prompt it got: the instructions arrived.
    expect(told in resp.output_text, f"instructions did not arrive: {resp.output_text!r}")


def weather_call(output):
    calls = [item for item in output if item.type == "function_call"]
    expect(len(calls) == 1, f"{len(calls)} function_call items in {output!r}")
    call = calls[0]
    parse_weather_call(call.name, call.arguments)
    expect(bool(call.call_id), f"no call_id: {call!r}")
    return call


def check_responses_tool_roundtrip(client, model):
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.responses.create(model=model, input=question, tools=[WEATHER_FUNCTION])
    expect(first.status == "completed", f"status {first.status!r}")
    call = weather_call(first.output)
    # As the SDK's docs do: the output items go back as input, with the result.
    echoed = [item.model_dump(exclude_none=True) for item in first.output]
    result = {"type": "function_call_output", "call_id": call.call_id, "output": WEATHER_OUTPUT}
    final = client.responses.create(
        model=model, input=question + echoed + [result], tools=[WEATHER_FUNCTION]
    )
    expect_text_response(final)
    expect(WEATHER_OUTPUT in final.output_text, f"tool output not used: {final.output_text!r}")


def check_event_stream(events):
    """The events of one text answer: spec order, one prelude, sequence
    numbers increasing, deltas that add up to the completed text."""
    types = [e.type for e in events]
    expect(types.count("response.created") == 1, f"{types.count('response.created')} created events")
    expect(types[0] == "response.created", f"first event {types[0]!r}")
    seqs = [e.sequence_number for e in events]
    expect(all(a < b for a, b in zip(seqs, seqs[1:])), f"sequence numbers {seqs}")
    collapsed = [t for i, t in enumerate(types) if i == 0 or types[i - 1] != t]
    expect(collapsed == TEXT_EVENT_ORDER, f"event order {collapsed}")
    ids = {e.response.id for e in events if hasattr(e, "response")}
    expect(len(ids) == 1, f"lifecycle events carry ids {ids}")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = events[-1].response
    expect(done.status == "completed", f"status {done.status!r}")
    expect(text and done.output_text == text, f"deltas {text!r}, completed {done.output_text!r}")
    expect(done.usage is not None and done.usage.total_tokens > 0, f"usage {done.usage!r}")
    return done


def check_responses_create_stream(client, model):
    stream = client.responses.create(
        model=model, input="Say hello in one short sentence.", stream=True
    )
    check_event_stream(list(stream))


def check_responses_stream_final(client, model):
    with client.responses.stream(
        model=model, input="Say hello in one short sentence.", instructions="Be brief"
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    expect_text_response(final)
    expect(final.output_text == "".join(deltas), "final text differs from the deltas")


def check_responses_stream_tool(client, model):
    stream = client.responses.create(
        model=model,
        input=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_FUNCTION],
        stream=True,
    )
    events = list(stream)
    types = [e.type for e in events]
    expect(types[0] == "response.created" and types[-1] == "response.completed", f"events {types}")
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    expect(len(done) == 1, f"{len(done)} arguments.done events")
    expect(done[0].arguments == args, f"deltas {args!r}, done {done[0].arguments!r}")
    parse_weather_call(done[0].name, done[0].arguments)
    weather_call(events[-1].response.output)


def check_responses_failover(client, model, provider):
    raw = client.responses.with_raw_response.create(model=model, input="Say hello.")
    h = raw.headers
    expect(h.get("x-llm-proxy-attempts") == "2", f"attempts {h.get('x-llm-proxy-attempts')!r}")
    expect(h.get("x-llm-proxy-provider") == provider, f"provider {h.get('x-llm-proxy-provider')!r}")
    expect_text_response(raw.parse())
    # A stream fails over too: the failed provider's held prelude never
    # reaches the client, which sees one response.created.
    with client.responses.with_streaming_response.create(
        model=model, input="Say hello.", stream=True
    ) as raw:
        h = raw.headers
        expect(h.get("x-llm-proxy-attempts") == "2", f"stream attempts {h.get('x-llm-proxy-attempts')!r}")
        expect(h.get("x-llm-proxy-provider") == provider, f"stream provider {h.get('x-llm-proxy-provider')!r}")
        check_event_stream(list(raw.parse()))


def check_responses_retrieve(client, model):
    made = client.responses.create(model=model, input="Remember me.")
    got = client.responses.with_raw_response.retrieve(made.id)
    resp = got.parse()
    expect(resp.id == made.id, f"retrieved {resp.id!r} for {made.id!r}")
    expect(resp.output_text, "retrieved response has no text")
    expect(got.headers.get("x-llm-proxy-provider"), "no x-llm-proxy-provider")
    # Narrowed to the model's providers.
    narrowed = client.responses.retrieve(made.id, extra_query={"model": model})
    expect(narrowed.id == made.id, f"retrieved {narrowed.id!r} with ?model=")
    # Narrowed, so that only providers that answer are asked (an unknown id
    # is "not found" only when every candidate could say so).
    try:
        client.responses.retrieve("resp_sdk_check_unknown", extra_query={"model": model})
        raise CheckFailed("an unknown id was found")
    except openai.NotFoundError as e:
        expect(e.status_code == 404, f"status {e.status_code}")


def check_previous_id_refused(client, model):
    try:
        client.responses.create(model=model, input="And then?", previous_response_id="resp_abc")
        raise CheckFailed("previous_response_id accepted by a translating provider")
    except openai.BadRequestError as e:
        expect(e.param == "previous_response_id", f"param {e.param!r}, body {e.body!r}")
        expect("previous_response_id" in str(e.message), f"message {e.message!r}")


def weather_agent(model):
    import agents

    @agents.function_tool
    def get_weather(location: str) -> str:
        """Current weather for a city."""
        return f"{WEATHER_OUTPUT} in {location}"

    return agents.Agent(
        name="weather", instructions="Answer with the weather.", model=model, tools=[get_weather]
    )


def setup_agents():
    import agents

    agents.set_tracing_disabled(True)
    agents.set_default_openai_client(openai.AsyncOpenAI(max_retries=0, timeout=30))
    agents.set_default_openai_api("responses")


def check_agents_run_sync(model):
    import agents

    setup_agents()
    result = agents.Runner.run_sync(weather_agent(model), "What is the weather in Paris?")
    expect(f"{WEATHER_OUTPUT} in Paris" in str(result.final_output), f"final {result.final_output!r}")
    calls = [i for i in result.new_items if i.type == "tool_call_item"]
    expect(len(calls) == 1, f"{len(calls)} tool calls")


def check_agents_run_streamed(model):
    import agents

    setup_agents()

    async def run():
        result = agents.Runner.run_streamed(weather_agent(model), "What is the weather in Paris?")
        kinds = [e.type async for e in result.stream_events()]
        return result, kinds

    result, kinds = asyncio.run(run())
    expect("raw_response_event" in kinds, f"no raw events: {set(kinds)}")
    expect(f"{WEATHER_OUTPUT} in Paris" in str(result.final_output), f"final {result.final_output!r}")


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
    responses_models = [
        m.strip()
        for m in os.environ.get("SDK_CHECK_RESPONSES_MODELS", ",".join(models)).split(",")
        if m.strip()
    ]
    for model in responses_models:
        checks += [
            (f"responses.string[{model}]", lambda m=model: check_responses_string(client, m)),
            (f"responses.instructions[{model}]", lambda m=model: check_responses_instructions(client, m)),
            (f"responses.tool_roundtrip[{model}]", lambda m=model: check_responses_tool_roundtrip(client, m)),
            (f"responses.create_stream[{model}]", lambda m=model: check_responses_create_stream(client, m)),
            (f"responses.stream_final[{model}]", lambda m=model: check_responses_stream_final(client, m)),
            (f"responses.stream_tool[{model}]", lambda m=model: check_responses_stream_tool(client, m)),
        ]
    for pair in os.environ.get("SDK_CHECK_FAILOVER", "").split(","):
        if "=" in pair:
            model, provider = (x.strip() for x in pair.split("=", 1))
            checks.append(
                (f"responses.failover[{model}]", lambda m=model, p=provider: check_responses_failover(client, m, p))
            )
    native = os.environ.get("SDK_CHECK_RESPONSES_NATIVE", "").strip()
    if native:
        checks.append((f"responses.retrieve[{native}]", lambda: check_responses_retrieve(client, native)))
    for model in os.environ.get("SDK_CHECK_RESPONSES_TRANSLATED", "").split(","):
        if model.strip():
            checks.append(
                (f"responses.previous_id_refused[{model.strip()}]", lambda m=model.strip(): check_previous_id_refused(client, m))
            )
    for model in responses_models:
        checks += [
            (f"agents.run_sync[{model}]", lambda m=model: check_agents_run_sync(m)),
            (f"agents.run_streamed[{model}]", lambda m=model: check_agents_run_streamed(m)),
        ]
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
