// The official OpenAI and Anthropic Node SDKs against the proxy: what a Node application sees.
//
// Usage: node node_sdk_check.mjs BASE_URL
//
// BASE_URL is the proxy's `/v1` URL, the first line printed by `cargo run --example
// sdk_fixture`, whose routes this script knows (see examples/sdk_fixture.rs). The SDKs are the
// exact pins of scripts/sdk/package.json (package-lock.json): scripts/test.sh installs them
// with `npm ci` into target/sdk-node and runs a copy of this script from there, so that
// `import "openai"` finds them. Every check asserts; the first failure ends the run with a
// non-zero status.
//
// It runs after the Python checks on the same fixture; the fixture's breakers ignore broken
// streams (`stream_interrupted`), so the `cut` routes break the same way however often the
// checks ask them.

import assert from "node:assert/strict";
import Anthropic from "@anthropic-ai/sdk";
import { VERSION as ANTHROPIC_VERSION } from "@anthropic-ai/sdk/version";
import OpenAI from "openai";
import { VERSION as OPENAI_VERSION } from "openai/version";

// The simulated provider's whole answer (llm_failover::sim::ANSWER).
const ANSWER = "The simulated provider answered this request in full, ending here.";
const MESSAGES = [{ role: "user", content: "hi" }];
// The simulated provider's vector length (llm_failover::sim::DEFAULT_DIMENSIONS).
const DIMENSIONS = 16;

function ok(line) {
  console.log(`ok  ${line}`);
}

/** Awaits `call()`, which must throw an instance of exactly `cls`; returns the error. */
async function expectThrows(name, cls, call) {
  try {
    await call();
  } catch (err) {
    assert.equal(err?.constructor?.name, cls.name, `${name}: threw ${err?.stack ?? err}`);
    assert.ok(err instanceof cls, `${name}: ${err?.constructor?.name} is not the SDK's ${cls.name}`);
    return err;
  }
  assert.fail(`${name}: no error thrown`);
}

/** Iterates `stream` (an async iterable) with `onEvent` until it throws; returns the error.
 * A stream that ends without throwing fails the check. */
async function expectBrokenStream(name, stream, onEvent) {
  try {
    for await (const event of stream) onEvent(event);
  } catch (err) {
    return err;
  }
  assert.fail(`${name}: the broken stream ended without throwing`);
}

/** The proxy's error details of a route that gave no answer (OpenAI's error shape). */
function checkOpenAIStatusError(route, err, status, code) {
  assert.equal(err.status, status, `${route}: status`);
  assert.equal(err.code, code, `${route}: err.code`);
  assert.equal(err.type, "failover_error", `${route}: err.type`);
  assert.equal(err.error?.failover?.route, route, `${route}: err.error ${JSON.stringify(err.error)}`);
  assert.ok(err.error.failover.attempts.length > 0, `${route}: no failover attempts`);
  assert.ok(err.headers.get("x-failover-trail"), `${route}: no x-failover-trail header`);
}

async function checkOpenAIChat(client) {
  // A plain request: the primary refuses connections, the fallback answers.
  const { data: completion, response } = await client.chat.completions
    .create({ model: "chat", messages: MESSAGES })
    .withResponse();
  assert.equal(completion.choices[0].message.content, ANSWER, JSON.stringify(completion));
  assert.equal(response.headers.get("x-failover-provider"), "sim", "plain: x-failover-provider");
  ok("chat, plain: the sim's answer, served by the fallback");

  // A streaming request: every token, a finish_reason, then a normal end.
  let text = "";
  let finish = null;
  const stream = await client.chat.completions.create({ model: "chat", messages: MESSAGES, stream: true });
  for await (const chunk of stream) {
    for (const choice of chunk.choices) {
      text += choice.delta.content ?? "";
      finish = choice.finish_reason ?? finish;
    }
  }
  assert.equal(text, ANSWER, "stream: the deltas");
  assert.equal(finish, "stop", "stream: finish_reason");
  ok("chat, streamed: the whole answer in deltas, finish_reason stop");

  // Routes that gave no answer: the SDK's typed errors with the proxy's code.
  for (const [route, cls, status, code, what] of [
    ["overloaded", OpenAI.InternalServerError, 503, "overloaded", "only target overloaded"],
    ["limited", OpenAI.RateLimitError, 429, "rate_limit", "only target rate-limited"],
  ]) {
    const err = await expectThrows(route, cls, () =>
      client.chat.completions.create({ model: route, messages: MESSAGES }),
    );
    checkOpenAIStatusError(route, err, status, code);
    ok(`chat, ${what}: ${cls.name} ${status}, err.code ${code}`);
  }

  // A stream cut upstream after three tokens throws while iterating, not a short answer.
  text = "";
  const cut = await client.chat.completions.create({ model: "cut", messages: MESSAGES, stream: true });
  const err = await expectBrokenStream("cut", cut, (chunk) => {
    for (const choice of chunk.choices) text += choice.delta.content ?? "";
  });
  assert.ok(err instanceof OpenAI.APIError, `cut: threw ${err?.stack ?? err}`);
  assert.equal(err.status, undefined, `cut: a status error (${err.status}) instead of a broken stream`);
  assert.ok(text && ANSWER.startsWith(text) && text !== ANSWER, `cut: text before: ${JSON.stringify(text)}`);
  assert.equal(err.code, "stream_interrupted", `cut: err.code, err.error ${JSON.stringify(err.error)}`);
  assert.equal(err.error.failover.reason, "stream_interrupted", JSON.stringify(err.error));
  ok(`chat stream cut after ${JSON.stringify(text)}: APIError while iterating, err.code stream_interrupted`);
}

async function checkOpenAIResponses(client) {
  // A plain answer.
  const resp = await client.responses.create({ model: "responses", input: "hi" });
  assert.equal(resp.output_text, ANSWER, JSON.stringify(resp));
  assert.equal(resp.status, "completed", "responses: status");
  assert.ok(resp.usage?.output_tokens > 0, `responses: usage ${JSON.stringify(resp.usage)}`);
  ok("responses: the sim's answer (output_text)");

  // The raw stream: text deltas add up to the answer, and the last event completes it.
  const events = [];
  for await (const event of await client.responses.create({ model: "responses", input: "hi", stream: true })) {
    events.push(event);
  }
  const kinds = events.map((e) => e.type);
  const text = events.filter((e) => e.type === "response.output_text.delta").map((e) => e.delta).join("");
  assert.equal(text, ANSWER, "responses stream: the deltas");
  assert.equal(kinds[0], "response.created", `responses stream: events ${kinds}`);
  assert.equal(kinds.at(-1), "response.completed", `responses stream: events ${kinds}`);
  assert.equal(kinds.filter((k) => k === "response.completed").length, 1, `events ${kinds}`);

  // The SDK's stream helper assembles the events into one response.
  const stream = client.responses.stream({ model: "responses", input: "hi" });
  let helped = "";
  for await (const event of stream) {
    if (event.type === "response.output_text.delta") helped += event.delta;
  }
  const final = await stream.finalResponse();
  assert.equal(helped, ANSWER, "responses stream helper: the deltas");
  assert.equal(final.output_text, ANSWER, JSON.stringify(final));
  ok("responses streamed: the answer in output_text deltas, then response.completed (raw and through the stream helper)");

  // A stream cut after three tokens throws while iterating and never completes.
  let cutText = "";
  const cutKinds = [];
  const cut = await client.responses.create({ model: "responses_cut", input: "hi", stream: true });
  const err = await expectBrokenStream("responses_cut", cut, (event) => {
    cutKinds.push(event.type);
    if (event.type === "response.output_text.delta") cutText += event.delta;
  });
  assert.ok(err instanceof OpenAI.APIError, `responses_cut: threw ${err?.stack ?? err}`);
  assert.equal(err.status, undefined, `responses_cut: a status error (${err.status}) instead of a broken stream`);
  assert.ok(!cutKinds.includes("response.completed"), `responses_cut: events ${cutKinds}`);
  assert.ok(
    cutText && ANSWER.startsWith(cutText) && cutText !== ANSWER,
    `responses_cut: text before: ${JSON.stringify(cutText)}`,
  );
  assert.equal(err.code, "stream_interrupted", `responses_cut: err.code, err.error ${JSON.stringify(err.error)}`);
  ok(`responses stream cut after ${JSON.stringify(cutText)}: APIError while iterating, err.code stream_interrupted, no response.completed`);
}

async function checkOpenAIEmbeddings(client) {
  // Without encoding_format the SDK asks for base64 and decodes the floats itself.
  const inputs = ["a", "b"];
  const batch = await client.embeddings.create({ model: "embed", input: inputs });
  assert.equal(batch.data.length, inputs.length, JSON.stringify(batch));
  assert.deepEqual(batch.data.map((d) => d.index), [0, 1], "embed: indices");
  for (const d of batch.data) {
    assert.equal(d.embedding.length, DIMENSIONS, `embed: ${JSON.stringify(d.embedding)}`);
    assert.ok(d.embedding.every((x) => typeof x === "number" && Number.isFinite(x)), "embed: not floats");
  }
  assert.notDeepEqual(batch.data[0].embedding, batch.data[1].embedding, "embed: two inputs, one vector");
  // The same floats as the proxy's answer in JSON numbers (read as 32-bit floats).
  const floats = await client.embeddings.create({ model: "embed", input: inputs, encoding_format: "float" });
  assert.deepEqual(
    batch.data.map((d) => d.embedding),
    floats.data.map((d) => Array.from(Float32Array.from(d.embedding))),
    "embed: the SDK's base64 decoding differs from the float answer",
  );
  ok(`embeddings, two inputs: two vectors of ${DIMENSIONS} floats in order (base64 decoded by the SDK = the float answer)`);

  // A route whose targets name two models is refused.
  const err = await expectThrows("embed_mixed", OpenAI.BadRequestError, () =>
    client.embeddings.create({ model: "embed_mixed", input: ["a", "b"] }),
  );
  assert.equal(err.status, 400, "embed_mixed: status");
  assert.equal(err.code, "route_not_embeddable", "embed_mixed: err.code");
  assert.ok(err.error.message.includes("`embed_mixed`"), `embed_mixed: ${err.error.message}`);
  ok("embeddings on a route mixing two models: BadRequestError 400, err.code route_not_embeddable");
}

function textOf(message) {
  return message.content
    .filter((b) => b.type === "text")
    .map((b) => b.text)
    .join("");
}

/** The proxy's error in Anthropic's shape: `err.error` is the whole body. */
function checkAnthropicStatusError(route, err, status, etype) {
  assert.equal(err.status, status, `${route}: status`);
  assert.equal(err.type, etype, `${route}: err.type`);
  assert.equal(err.error?.type, "error", `${route}: body ${JSON.stringify(err.error)}`);
  assert.equal(err.error.error.type, etype, `${route}: body ${JSON.stringify(err.error)}`);
  assert.equal(err.error.error.failover?.route, route, `${route}: body ${JSON.stringify(err.error)}`);
}

async function checkAnthropic(client) {
  const params = { max_tokens: 256, messages: MESSAGES };

  const m = await client.messages.create({ model: "claude", ...params });
  assert.equal(textOf(m), ANSWER, JSON.stringify(m));
  assert.equal(m.stop_reason, "end_turn", "claude: stop_reason");
  assert.ok(m.usage.output_tokens > 0, JSON.stringify(m.usage));
  ok("anthropic messages.create: the sim's answer, stop_reason end_turn");

  // The stream helper: its text events and its final message.
  const s = client.messages.stream({ model: "claude", ...params });
  let streamed = "";
  s.on("text", (delta) => {
    streamed += delta;
  });
  const final = await s.finalMessage();
  assert.equal(streamed, ANSWER, "stream helper: the text events");
  assert.equal(textOf(final), ANSWER, JSON.stringify(final));
  assert.equal(final.stop_reason, "end_turn", "stream helper: stop_reason");
  ok("anthropic messages.stream: text events and finalMessage() are the answer");

  // Failover from an Anthropic target (529) to an OpenAI-compatible one, translated.
  const { data: translated, response } = await client.messages
    .create({ model: "claude_to_openai", ...params })
    .withResponse();
  assert.equal(textOf(translated), ANSWER, JSON.stringify(translated));
  const trail = response.headers.get("x-failover-trail") ?? "";
  assert.ok(trail.startsWith("claude/sim-529=") && trail.endsWith("; sim/gpt-4o-mini=ok"), `trail ${trail}`);
  const translatedFinal = await client.messages.stream({ model: "claude_to_openai", ...params }).finalMessage();
  assert.equal(textOf(translatedFinal), ANSWER, JSON.stringify(translatedFinal));
  ok(`anthropic failover to an OpenAI-compatible target: the answer, translated, streamed too (${trail})`);

  // Typed errors. The Node SDK maps 529 to OverloadedError (a subclass of InternalServerError).
  let err = await expectThrows("claude_overloaded", Anthropic.OverloadedError, () =>
    client.messages.create({ model: "claude_overloaded", ...params }),
  );
  assert.ok(err instanceof Anthropic.InternalServerError, "claude_overloaded: not an InternalServerError");
  checkAnthropicStatusError("claude_overloaded", err, 529, "overloaded_error");
  ok("anthropic, only target overloaded: OverloadedError (an InternalServerError) 529, overloaded_error");
  err = await expectThrows("claude_limited", Anthropic.RateLimitError, () =>
    client.messages.create({ model: "claude_limited", ...params }),
  );
  checkAnthropicStatusError("claude_limited", err, 429, "rate_limit_error");
  assert.ok(err.headers.get("retry-after"), "claude_limited: no retry-after header");
  ok(`anthropic, only target rate-limited: RateLimitError 429, rate_limit_error, retry-after ${err.headers.get("retry-after")}`);

  // A stream that breaks after three deltas throws while iterating; it never ends as if whole.
  let got = "";
  const kinds = [];
  const cut = await client.messages.create({ model: "claude_cut", ...params, stream: true });
  err = await expectBrokenStream("claude_cut", cut, (event) => {
    kinds.push(event.type);
    if (event.type === "content_block_delta" && event.delta.type === "text_delta") got += event.delta.text;
  });
  assert.ok(err instanceof Anthropic.APIError, `claude_cut: threw ${err?.stack ?? err}`);
  assert.equal(err.status, undefined, `claude_cut: a status error (${err.status}) instead of a broken stream`);
  assert.ok(got && ANSWER.startsWith(got) && got !== ANSWER, `claude_cut: text before: ${JSON.stringify(got)}`);
  assert.ok(!kinds.includes("message_stop"), `claude_cut: events ${kinds}`);
  assert.equal(err.error?.error?.code, "stream_interrupted", `claude_cut: body ${JSON.stringify(err.error)}`);
  // The stream helper's final message rejects with the same error.
  const helper = client.messages.stream({ model: "claude_cut", ...params });
  const helperErr = await expectThrows("claude_cut helper", Anthropic.APIError, () => helper.finalMessage());
  assert.equal(helperErr.error?.error?.code, "stream_interrupted", JSON.stringify(helperErr.error));
  ok(`anthropic stream cut after ${JSON.stringify(got)}: APIError while iterating (type ${err.type}), no message_stop; finalMessage() rejects`);
}

async function main() {
  const baseURL = process.argv[2];
  assert.ok(baseURL?.endsWith("/v1"), "usage: node node_sdk_check.mjs BASE_URL (the proxy's /v1 URL)");
  console.log(
    `openai ${OPENAI_VERSION}, @anthropic-ai/sdk ${ANTHROPIC_VERSION} on node ${process.version} against ${baseURL}`,
  );

  // maxRetries 0: the SDK's own retries would hide the proxy's answer behind a second one.
  const openai = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0, timeout: 30_000 });
  await checkOpenAIChat(openai);
  await checkOpenAIResponses(openai);
  await checkOpenAIEmbeddings(openai);

  // Anthropic's SDK is given the root: it adds /v1/messages itself.
  const anthropic = new Anthropic({
    baseURL: baseURL.replace(/\/v1$/, ""),
    apiKey: "unused",
    maxRetries: 0,
    timeout: 30_000,
  });
  await checkAnthropic(anthropic);

  console.log("node sdk check: all passed");
}

try {
  await main();
} catch (err) {
  console.error(`FAILED ${err?.stack ?? err}`);
  process.exit(1);
}
