#!/usr/bin/env python3
"""The official OpenAI Python SDK against the proxy: what an application sees.

Usage: openai_sdk_check.py BASE_URL STATUS_URL

BASE_URL is the proxy's `/v1` URL and STATUS_URL the fixture's status endpoint, the two lines
printed by `cargo run --example sdk_fixture`, whose routes this script knows (see
examples/sdk_fixture.rs). scripts/test.sh runs it in a virtualenv with
the pinned `openai` package (scripts/sdk/requirements.txt). Every check asserts; the first
failure ends the run with a non-zero status.
"""

import array
import base64
import json
import sys
import urllib.request

import openai

# The simulated provider's whole answer (llm_failover::sim::ANSWER).
ANSWER = "The simulated provider answered this request in full, ending here."
MESSAGES = [{"role": "user", "content": "hi"}]
# The simulated provider's vector length (llm_failover::sim::DEFAULT_DIMENSIONS).
DIMENSIONS = 16
# A function tool in the Responses API's shape (flat: no nested "function" object).
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def check(name, cond, detail=""):
    if not cond:
        raise AssertionError(f"{name}: {detail}")


def expect_status_error(client, model, cls, status, code, etype, reason, call=None):
    """A non-streaming request to `model` (a chat completion unless `call` makes another)
    raises `cls` with the proxy's status and body."""
    try:
        if call is None:
            client.chat.completions.create(model=model, messages=MESSAGES)
        else:
            call()
    except openai.APIStatusError as e:
        check(model, type(e) is cls, f"raised {type(e).__name__}, expected {cls.__name__}")
        check(model, e.status_code == status, f"status {e.status_code}, expected {status}")
        check(model, e.code == code, f"e.code {e.code!r}, expected {code!r}")
        check(model, e.type == etype, f"e.type {e.type!r}, expected {etype!r}")
        failover = e.body.get("failover") if isinstance(e.body, dict) else None
        check(model, isinstance(failover, dict), f"no failover details in {e.body!r}")
        check(model, failover["route"] == model, f"failover.route {failover['route']!r}")
        check(model, failover["reason"] == reason, f"failover.reason {failover['reason']!r}")
        check(model, failover["attempts"], "failover.attempts is empty")
        check(model, e.response.headers.get("x-failover-trail"), "no x-failover-trail header")
        return e
    raise AssertionError(f"{model}: no error raised")


def failing_attempts(status_url):
    """Requests the provider behind the `failing` route has received so far."""
    with urllib.request.urlopen(f"{status_url}/attempts", timeout=10) as r:
        return json.load(r)["failing"]


def check_default_retries(base_url, status_url):
    """The SDK at its default retries (2) against a route whose targets all fail: the proxy
    has run the whole chain and says `x-should-retry: false`, so the SDK gives up at once
    with the proxy's error and the provider sees the chain's attempts once, not three times."""
    client = openai.OpenAI(base_url=base_url, api_key="unused", timeout=30)
    check("default retries", client.max_retries == 2, f"max_retries {client.max_retries}")
    before = failing_attempts(status_url)
    e = expect_status_error(client, "failing", openai.InternalServerError, 503,
                            "overloaded", "failover_error", "overloaded")
    sent = failing_attempts(status_url) - before
    chain = [a for a in e.body["failover"]["attempts"] if a["outcome"] == "failed"]
    check("default retries", e.response.headers.get("x-should-retry") == "false",
          f"x-should-retry {e.response.headers.get('x-should-retry')!r}")
    check("default retries", len(chain) >= 2, f"the chain's attempts: {chain!r}")
    check("default retries", sent == len(chain),
          f"the provider saw {sent} requests for a chain of {len(chain)} attempts")
    print(f"ok  default max_retries=2 on a failing route: {sent} upstream attempts (the chain's, "
          "once), InternalServerError 503 at once, x-should-retry false")


def check_resumed(client):
    """A stream cut after three tokens on a route with stream_resume reads as one answer."""
    chunks = list(client.chat.completions.create(
        model="resumed", messages=MESSAGES, stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check("resumed", text == ANSWER, f"text {text!r}")
    check("resumed", len({c.id for c in chunks}) == 1, f"ids {[c.id for c in chunks]}")
    roles = [c for c in chunks if c.choices and c.choices[0].delta.role]
    check("resumed", len(roles) == 1, f"{len(roles)} chunks with a role")
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    check("resumed", finishes == ["stop"], f"finish reasons {finishes}")
    usage = chunks[-1].usage
    check("resumed", usage is not None and usage.completion_tokens == len(ANSWER.split(" ")),
          f"usage {usage}")
    trail = (chunks[-1].model_extra or {}).get("failover", {}).get("trail", "")
    check("resumed", trail.endswith("sim/gpt-4o-mini=ok"), f"failover extension {chunks[-1]}")
    # The SDK's stream helper assembles the chunks into one completion.
    with client.chat.completions.stream(model="resumed", messages=MESSAGES) as stream:
        final = stream.get_final_completion()
    check("resumed", final.choices[0].message.content == ANSWER, repr(final))
    check("resumed", final.choices[0].finish_reason == "stop", repr(final))
    print(f"ok  stream cut after three tokens, resumed on another target: one answer ({trail})")


def f32(values):
    """`values` as the 32-bit floats the sim computed (JSON prints each one's shortest form,
    which Python reads as a nearby 64-bit float)."""
    return array.array("f", values).tolist()


def check_embeddings(client):
    """`POST /v1/embeddings`: vectors in the SDK's types, base64 decoded, failover between
    hosts of one model, and the typed errors of a route that must not serve embeddings."""
    # /v1/models says which routes serve embeddings: not one whose targets mix models.
    endpoints = {m.id: (m.model_extra or {}).get("endpoints") for m in client.models.list()}
    check("embed models", "/v1/embeddings" in endpoints["embed"], repr(endpoints["embed"]))
    check("embed models", "/v1/embeddings" not in endpoints["embed_mixed"],
          repr(endpoints["embed_mixed"]))

    # One input: one vector of the sim's length, and the usage.
    one = client.embeddings.create(model="embed", input="hello world", encoding_format="float")
    check("embed", one.object == "list", repr(one))
    check("embed", len(one.data) == 1, f"{len(one.data)} vectors for one input")
    vector = one.data[0].embedding
    check("embed", one.data[0].index == 0, repr(one.data[0]))
    check("embed", len(vector) == DIMENSIONS and all(isinstance(x, float) for x in vector),
          f"{len(vector)} dimensions, expected {DIMENSIONS}: {vector!r}")
    check("embed", one.usage is not None and one.usage.prompt_tokens == 2
          and one.usage.total_tokens == 2, f"usage {one.usage!r}")
    print(f"ok  embeddings, one input: one vector of {DIMENSIONS} floats, "
          f"usage {one.usage.prompt_tokens} tokens")

    # A batch: one vector per input, in the inputs' order, each the one its input gets alone.
    inputs = ["the first input", "a second", "and the third one"]
    batch = client.embeddings.create(model="embed", input=inputs, encoding_format="float")
    check("embed batch", [d.index for d in batch.data] == list(range(len(inputs))),
          f"indices {[d.index for d in batch.data]}")
    check("embed batch", all(len(d.embedding) == DIMENSIONS for d in batch.data),
          f"lengths {[len(d.embedding) for d in batch.data]}")
    for text, d in zip(inputs, batch.data):
        alone = client.embeddings.create(model="embed", input=text, encoding_format="float")
        check("embed batch", d.embedding == alone.data[0].embedding,
              f"the vector at index {d.index} is not the one for {text!r}")
    check("embed batch", len({tuple(d.embedding) for d in batch.data}) == len(inputs),
          "two inputs got the same vector")
    check("embed batch", batch.usage.prompt_tokens == sum(len(t.split()) for t in inputs),
          f"usage {batch.usage!r}")
    print(f"ok  embeddings, a batch of {len(inputs)}: one vector each, in order (index 0..2)")

    # base64: without encoding_format the SDK asks for base64 and decodes it itself; with
    # encoding_format="base64" it hands over the string as the proxy passed it on.
    decoded = client.embeddings.create(model="embed", input="hello world")
    check("embed base64", decoded.data[0].embedding == f32(vector),
          f"the SDK decoded {decoded.data[0].embedding!r}, the float answer was {vector!r}")
    encoded = client.embeddings.create(model="embed", input="hello world",
                                       encoding_format="base64")
    text = encoded.data[0].embedding
    check("embed base64", isinstance(text, str), f"not a base64 string: {text!r}")
    floats = array.array("f", base64.b64decode(text))
    if sys.byteorder == "big":
        floats.byteswap()  # the wire's floats are little-endian
    check("embed base64", floats.tolist() == f32(vector),
          f"{text!r} decodes to {floats.tolist()!r}, the float answer was {vector!r}")
    print("ok  embeddings as base64: the SDK's decoding and the raw string equal the floats")

    # Failover between two hosts of one model: the first refuses connections.
    raw = client.embeddings.with_raw_response.create(
        model="embed_failover", input="hello world", encoding_format="float")
    answer = raw.parse()
    trail = raw.headers.get("x-failover-trail", "")
    attempts = trail.split("; ")
    check("embed failover", answer.data[0].embedding == vector,
          "another vector than the same model's on the `embed` route")
    check("embed failover", len(attempts) == 2, f"trail {trail!r}")
    check("embed failover", attempts[0].startswith("down/text-embedding-3-small=")
          and not attempts[0].endswith("=ok"), f"trail {trail!r}")
    check("embed failover", attempts[1] == "sim/text-embedding-3-small=ok", f"trail {trail!r}")
    check("embed failover", raw.headers.get("x-failover-provider") == "sim", dict(raw.headers))
    print(f"ok  embeddings failover between hosts of one model: the same vector ({trail})")

    # A route whose targets name two models: refused before any provider, chat still served.
    try:
        client.embeddings.create(model="embed_mixed", input="hello world")
    except openai.APIStatusError as e:
        check("embed_mixed", type(e) is openai.BadRequestError,
              f"raised {type(e).__name__}, expected BadRequestError")
        check("embed_mixed", e.status_code == 400, f"status {e.status_code}")
        check("embed_mixed", e.code == "route_not_embeddable", f"e.code {e.code!r}")
        message = e.body.get("message", "") if isinstance(e.body, dict) else ""
        check("embed_mixed", "`embed_mixed`" in message, f"message {message!r}")
        check("embed_mixed", "sim/nomic-embed-text" in message, f"message {message!r}")
    else:
        raise AssertionError("embed_mixed: vectors from a route that mixes two models")
    chat = client.chat.completions.create(model="embed_mixed", messages=MESSAGES)
    check("embed_mixed", chat.choices[0].message.content == ANSWER, repr(chat))
    print("ok  embeddings on a route mixing two models: BadRequestError 400, "
          "e.code route_not_embeddable (its chat still answers)")

    # The only target rate-limited: the proxy's 429 with the chain's details.
    expect_status_error(
        client, "embed_limited", openai.RateLimitError, 429, "rate_limit", "failover_error",
        "rate_limit", call=lambda: client.embeddings.create(model="embed_limited", input="hi"))
    print("ok  embeddings, only target rate-limited: RateLimitError 429, e.code rate_limit")


def check_responses(client):
    """`POST /v1/responses` (OpenAI's Responses API) through the SDK's `client.responses`.

    The fixture's `resp` provider is the sim in the Responses API; its `responses*` routes
    are listed in examples/sdk_fixture.rs.

    On a broken stream: the pinned SDK raises `APIError` while iterating only for an event
    whose JSON has a nested `error` object (what the live API sends); an `error` event with
    only the flat fields of the API reference (`code`, `message`, `param`) is yielded as a
    `ResponseErrorEvent` and nothing raises (openai-python issue #2487). So the proxy's
    `error` event carries both.
    """
    # A plain answer.
    resp = client.responses.create(model="responses", input="hi")
    check("responses", resp.output_text == ANSWER, repr(resp))
    check("responses", resp.status == "completed", f"status {resp.status!r}")
    check("responses", resp.usage is not None and resp.usage.output_tokens > 0,
          f"usage {resp.usage!r}")
    print("ok  responses: the sim's answer (output_text)")

    # The raw stream: text deltas add up to the answer, and the last event completes it.
    events = list(client.responses.create(model="responses", input="hi", stream=True))
    kinds = [e.type for e in events]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    check("responses stream", text == ANSWER, f"deltas {text!r}")
    check("responses stream", kinds[0] == "response.created", f"events {kinds}")
    check("responses stream", kinds[-1] == "response.completed", f"events {kinds}")
    check("responses stream", kinds.count("response.completed") == 1, f"events {kinds}")
    check("responses stream", events[-1].response.output_text == ANSWER, repr(events[-1]))
    # The SDK's stream helper assembles the events into one response.
    with client.responses.stream(model="responses", input="hi") as stream:
        helped = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    check("responses stream helper", helped == ANSWER, f"deltas {helped!r}")
    check("responses stream helper", final.output_text == ANSWER, repr(final))
    print("ok  responses streamed: the whole answer in output_text deltas, then "
          "response.completed (raw and through the stream helper)")

    # A tool call, and the answer to its output.
    first = client.responses.create(model="responses_tool", input="What is the weather?",
                                    tools=[WEATHER_TOOL])
    calls = [o for o in first.output if o.type == "function_call"]
    check("responses tool", len(calls) == 1, f"output {first.output!r}")
    call = calls[0]
    check("responses tool", call.name == "get_weather", repr(call))
    check("responses tool", call.call_id, f"no call_id: {call!r}")
    check("responses tool", json.loads(call.arguments) == {"city": "sim"}, repr(call))
    history = [{"role": "user", "content": "What is the weather?"}]
    history += [o.model_dump(by_alias=True, exclude_none=True) for o in first.output]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "sunny"})
    second = client.responses.create(model="responses_tool", input=history, tools=[WEATHER_TOOL])
    check("responses tool", not [o for o in second.output if o.type == "function_call"],
          f"another call: {second.output!r}")
    check("responses tool", "sunny" in second.output_text, repr(second))
    print(f"ok  responses tool call: function_call {call.call_id}, then a text answer to its "
          "function_call_output")

    # Failover: the first target is overloaded.
    raw = client.responses.with_raw_response.create(model="responses_failover", input="hi")
    resp = raw.parse()
    trail = raw.headers.get("x-failover-trail", "")
    attempts = trail.split("; ")
    check("responses failover", resp.output_text == ANSWER, repr(resp))
    check("responses failover", len(attempts) == 2, f"trail {trail!r}")
    check("responses failover", attempts[0].startswith("resp/sim-503=")
          and not attempts[0].endswith("=ok"), f"trail {trail!r}")
    check("responses failover", attempts[1] == "resp/gpt-4o-mini=ok", f"trail {trail!r}")
    print(f"ok  responses failover: the answer from the second target ({trail})")

    # Translation: the route's only target speaks the chat API, or Anthropic's.
    for model, provider in [("responses_to_chat", "sim"), ("responses_to_claude", "claude")]:
        raw = client.responses.with_raw_response.create(model=model, input="hi")
        resp = raw.parse()
        check(model, resp.output_text == ANSWER, repr(resp))
        check(model, raw.headers.get("x-failover-provider") == provider, dict(raw.headers))
        with client.responses.stream(model=model, input="hi") as stream:
            final = stream.get_final_response()
        check(model, final.output_text == ANSWER, repr(final))
        check(model, final.usage.output_tokens > 0, repr(final.usage))
        print(f"ok  responses on a {provider} target: the same answer, translated (streamed too)")

    # A tool call through a chat API target, streamed: the helper's final response has the
    # call, and its output goes back as a function_call_output.
    with client.responses.stream(model="responses_to_chat_tool", input="Weather in Paris?",
                                 tools=[WEATHER_TOOL]) as stream:
        final = stream.get_final_response()
    calls = [o for o in final.output if o.type == "function_call"]
    check("translated tool", len(calls) == 1, repr(final.output))
    check("translated tool", calls[0].name == WEATHER_TOOL["name"], repr(calls[0]))
    check("translated tool", isinstance(json.loads(calls[0].arguments), dict), repr(calls[0]))
    history = [{"role": "user", "content": "Weather in Paris?"}, calls[0].model_dump(),
               {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}]
    second = client.responses.create(model="responses_to_chat_tool", input=history,
                                     tools=[WEATHER_TOOL])
    check("translated tool", "sunny" in second.output_text, repr(second))
    print(f"ok  responses tool call through a chat target, streamed: {calls[0].call_id}, then "
          "a text answer")

    # Typed errors: routes that gave no answer.
    for model, cls, status, code, what in [
        ("responses_overloaded", openai.InternalServerError, 503, "overloaded",
         "only target overloaded"),
        ("responses_limited", openai.RateLimitError, 429, "rate_limit",
         "only target rate-limited"),
    ]:
        expect_status_error(client, model, cls, status, code, "failover_error", code,
                            call=lambda m=model: client.responses.create(model=m, input="hi"))
        print(f"ok  responses, {what}: {cls.__name__} {status}, e.code {code}")

    # A stream cut after three tokens raises while iterating and never completes.
    text, kinds = "", []
    try:
        for event in client.responses.create(model="responses_cut", input="hi", stream=True):
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                text += event.delta
    except openai.APIStatusError as e:
        raise AssertionError(
            f"responses_cut: a status error ({e.status_code}) instead of a broken stream")
    except openai.APIError as e:
        check("responses_cut", "response.completed" not in kinds, f"events {kinds}")
        check("responses_cut", text and ANSWER.startswith(text) and text != ANSWER,
              f"text before: {text!r}")
        check("responses_cut", e.code == "stream_interrupted", f"e.code {e.code!r}, body {e.body!r}")
        print(f"ok  responses stream cut after {text!r}: APIError, e.code stream_interrupted, "
              "no response.completed")
    else:
        raise AssertionError(
            f"responses_cut: the stream ended without raising after {text!r} (events {kinds})")


def main():
    base_url = sys.argv[1]
    status_url = sys.argv[2]
    # max_retries=0: the SDK's own retries would hide the proxy's answer behind a second one.
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=30)
    print(f"openai {openai.__version__} against {base_url}")

    # The routes are the models.
    models = {m.id for m in client.models.list()}
    check("models", {"chat", "context", "cut"} <= models, f"listed {sorted(models)}")

    # A plain request: the primary refuses connections, the fallback answers.
    raw = client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
    completion = raw.parse()
    check("plain", completion.choices[0].message.content == ANSWER, repr(completion))
    check("plain", raw.headers.get("x-failover-provider") == "sim", dict(raw.headers))
    print("ok  plain request: the sim's answer, served by the fallback")

    # A streaming request: every token, a finish_reason, then a normal end.
    text, finish = "", None
    for chunk in client.chat.completions.create(model="chat", messages=MESSAGES, stream=True):
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    check("stream", text == ANSWER, repr(text))
    check("stream", finish == "stop", f"finish_reason {finish!r}")
    print("ok  streaming request: the whole answer, finish_reason stop")

    # Errors the proxy returns as the upstream sent them (the upstream's code and type), then
    # routes that gave no answer (the proxy's status, e.code = the failover reason).
    for model, cls, status, code, etype, reason, what in [
        ("context", openai.BadRequestError, 400, "context_length_exceeded",
         "invalid_request_error", "context_overflow", "context overflow"),
        ("filter", openai.BadRequestError, 400, "content_filter",
         "invalid_request_error", "content_filter", "content filter"),
        ("overloaded", openai.InternalServerError, 503, "overloaded",
         "failover_error", "overloaded", "only target overloaded"),
        ("dead", openai.InternalServerError, 502, "connection_refused",
         "failover_error", "connection_refused", "only target refusing connections"),
        ("limited", openai.RateLimitError, 429, "rate_limit",
         "failover_error", "rate_limit", "only target rate-limited"),
    ]:
        expect_status_error(client, model, cls, status, code, etype, reason)
        print(f"ok  {what}: {cls.__name__} {status}, e.code {code}")

    # A stream cut upstream after three tokens raises instead of ending as a short answer.
    text = ""
    try:
        for chunk in client.chat.completions.create(model="cut", messages=MESSAGES, stream=True):
            for choice in chunk.choices:
                text += choice.delta.content or ""
    except openai.APIStatusError as e:
        raise AssertionError(f"cut: a status error ({e.status_code}) instead of a broken stream")
    except openai.APIError as e:
        check("cut", text and ANSWER.startswith(text) and text != ANSWER, f"text before: {text!r}")
        check("cut", e.code == "stream_interrupted", f"e.code {e.code!r}, body {e.body!r}")
        check("cut", e.body["failover"]["reason"] == "stream_interrupted", repr(e.body))
        print(f"ok  stream cut after {text!r}: APIError, e.code stream_interrupted")
    else:
        raise AssertionError(f"cut: the stream ended normally with {text!r}")

    check_resumed(client)
    check_embeddings(client)
    check_default_retries(base_url, status_url)
    check_responses(client)

    print("all SDK checks passed")


if __name__ == "__main__":
    main()
