#!/usr/bin/env python3
"""The official Anthropic Python SDK against the proxy's `POST /v1/messages` and
`POST /v1/messages/count_tokens`.

Usage: anthropic_sdk_check.py BASE_URL

BASE_URL is the proxy's `/v1` URL printed by `cargo run --example sdk_fixture` (the SDK is
given the root: it adds `/v1/messages` itself); the routes are the fixture's (see
examples/sdk_fixture.rs). scripts/test.sh runs it in a virtualenv with the pinned `anthropic`
package (scripts/sdk/requirements.txt). Every check asserts; the first failure ends the run
with a non-zero status.
"""

import json
import sys

import anthropic

# The simulated provider's whole answer (llm_failover::sim::ANSWER).
ANSWER = "The simulated provider answered this request in full, ending here."
MESSAGES = [{"role": "user", "content": "hi"}]
TOOLS = [
    {
        "name": "weather",
        "description": "The weather in a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]


def check(name, cond, detail=""):
    if not cond:
        raise AssertionError(f"{name}: {detail}")


def text_of(message):
    return "".join(b.text for b in message.content if b.type == "text")


def check_answers(client):
    m = client.messages.create(model="claude", max_tokens=256, messages=MESSAGES)
    check("plain", text_of(m) == ANSWER, repr(m))
    check("plain", m.stop_reason == "end_turn", m.stop_reason)
    check("plain", m.usage.output_tokens > 0, repr(m.usage))

    # The stream helper, and the raw events.
    with client.messages.stream(model="claude", max_tokens=256, messages=MESSAGES) as s:
        streamed = "".join(s.text_stream)
        final = s.get_final_message()
    check("stream helper", streamed == ANSWER, streamed)
    check("stream helper", final.stop_reason == "end_turn", final.stop_reason)
    raw = client.messages.create(
        model="claude", max_tokens=256, messages=MESSAGES, stream=True
    )
    kinds = [e.type for e in raw]
    check("raw events", kinds[0] == "message_start", kinds)
    check("raw events", kinds[-1] == "message_stop", kinds)
    check("raw events", "content_block_delta" in kinds, kinds)

    # A stream cut after three deltas, finished on another target: the helper sees one
    # message, whole, with one id and the usage of both attempts.
    with client.messages.stream(
        model="claude_resumed", max_tokens=256, messages=MESSAGES
    ) as s:
        streamed = "".join(s.text_stream)
        final = s.get_final_message()
    check("resumed", streamed == ANSWER, streamed)
    check("resumed", text_of(final) == ANSWER, repr(final))
    check("resumed", final.stop_reason == "end_turn", final.stop_reason)
    check("resumed", final.id.startswith("msg_"), final.id)
    check("resumed", final.usage.output_tokens >= len(ANSWER.split()), repr(final.usage))

    # Failover from an Anthropic target to an OpenAI-compatible one, and back.
    for route in ["claude_to_openai", "openai_to_claude"]:
        raw = client.messages.with_raw_response.create(
            model=route, max_tokens=256, messages=MESSAGES
        )
        m = raw.parse()
        check(route, text_of(m) == ANSWER, repr(m))
        trail = raw.headers.get("x-failover-trail", "")
        check(route, trail.endswith("=ok") and ";" in trail, trail)
        with client.messages.stream(model=route, max_tokens=256, messages=MESSAGES) as s:
            check(route, "".join(s.text_stream) == ANSWER, route)


def check_tools(client):
    """A tool use round trip, natively and through a translating (OpenAI) target."""
    for route in ["claude_tool", "translated_tool"]:
        m = client.messages.create(
            model=route, max_tokens=256, messages=MESSAGES, tools=TOOLS
        )
        check(route, m.stop_reason == "tool_use", m.stop_reason)
        call = next(b for b in m.content if b.type == "tool_use")
        check(route, call.name == "weather" and call.input == {"city": "sim"}, repr(call))
        history = MESSAGES + [
            {"role": "assistant", "content": [call.model_dump()]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}
                ],
            },
        ]
        m = client.messages.create(
            model=route, max_tokens=256, messages=history, tools=TOOLS
        )
        check(route, "sunny" in text_of(m), repr(m))
        with client.messages.stream(
            model=route, max_tokens=256, messages=MESSAGES, tools=TOOLS
        ) as s:
            final = s.get_final_message()
        call = next(b for b in final.content if b.type == "tool_use")
        check(route, call.input == {"city": "sim"}, repr(call))


def expect(client, route, cls, status, etype):
    try:
        client.messages.create(model=route, max_tokens=256, messages=MESSAGES)
    except anthropic.APIStatusError as e:
        check(route, type(e) is cls, f"raised {type(e).__name__}, expected {cls.__name__}")
        check(route, e.status_code == status, f"status {e.status_code}")
        body = e.body if isinstance(e.body, dict) else {}
        check(route, body.get("type") == "error", repr(e.body))
        check(route, body["error"]["type"] == etype, repr(e.body))
        return e
    raise AssertionError(f"{route}: no error raised")


def check_errors(client):
    e = expect(client, "claude_overloaded", anthropic.OverloadedError, 529, "overloaded_error")
    check("overloaded", e.body["error"]["failover"]["route"] == "claude_overloaded", e.body)
    e = expect(client, "claude_limited", anthropic.RateLimitError, 429, "rate_limit_error")
    check("limited", e.response.headers.get("retry-after"), dict(e.response.headers))
    # A request the upstream rejects keeps the upstream's own error.
    e = expect(client, "claude_invalid", anthropic.BadRequestError, 400, "invalid_request_error")
    check("invalid", "failover" in e.body["error"], e.body)
    e = expect(client, "nope", anthropic.NotFoundError, 404, "not_found_error")

    # A stream that breaks after its first delta raises; it never ends as if whole.
    got = ""
    try:
        with client.messages.stream(model="claude_cut", max_tokens=256, messages=MESSAGES) as s:
            for t in s.text_stream:
                got += t
    except anthropic.APIError as e:
        check("cut", got and ANSWER.startswith(got) and got != ANSWER, got)
        check("cut", "stream_interrupted" in json.dumps(getattr(e, "body", None)) or
              "stream" in str(e), repr(e))
    else:
        raise AssertionError(f"cut: the broken stream ended without raising: {got!r}")


def check_count_tokens(client):
    """Token counting through a native Anthropic target, and on a route without one."""
    messages = [
        {"role": "user", "content": "say the thing"},
        {"role": "assistant", "content": "which thing"},
        {"role": "user", "content": "the one you know"},
    ]
    raw = client.messages.with_raw_response.count_tokens(
        model="claude", system="be brief", messages=messages
    )
    count = raw.parse()
    check("count_tokens", count.input_tokens > 0, repr(count))
    check("count_tokens", raw.headers.get("x-failover-trail", "").endswith("=ok"),
          dict(raw.headers))
    m = client.messages.create(
        model="claude", max_tokens=256, system="be brief", messages=messages
    )
    check("count_tokens", count.input_tokens == m.usage.input_tokens,
          f"counted {count.input_tokens}, the message reports {m.usage.input_tokens}")
    count = client.messages.count_tokens(model="claude", messages=MESSAGES)
    check("count_tokens", count.input_tokens > 0, repr(count))

    # A route whose targets all speak OpenAI's API cannot count: a typed 400 that says why.
    try:
        client.messages.count_tokens(model="chat", messages=MESSAGES)
    except anthropic.BadRequestError as e:
        check("count_tokens no anthropic target", e.status_code == 400, e.status_code)
        body = e.body if isinstance(e.body, dict) else {}
        check("count_tokens no anthropic target", body.get("type") == "error", repr(e.body))
        check("count_tokens no anthropic target",
              body["error"]["type"] == "invalid_request_error", repr(e.body))
        check("count_tokens no anthropic target",
              "token counting" in body["error"]["message"], repr(e.body))
    else:
        raise AssertionError("count_tokens on `chat`: no error raised")


def main():
    base = sys.argv[1].removesuffix("/v1")
    client = anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0, timeout=30)
    check_answers(client)
    check_tools(client)
    check_errors(client)
    check_count_tokens(client)
    # The models list works for this SDK too.
    ids = [m.id for m in client.models.list()]
    check("models", "claude" in ids, ids)
    print("anthropic sdk check: all passed")


if __name__ == "__main__":
    main()
