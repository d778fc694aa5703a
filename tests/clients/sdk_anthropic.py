#!/usr/bin/env python3
"""Freeway's /v1/messages surface driven by the official `anthropic` Python SDK.

Usage: sdk_anthropic.py [--base-url URL] [--api-key KEY] [--model M] [--mock-log FILE]
                        [--skip NAME,...] [--only NAME,...]
  URL   Freeway's root (default $FREEWAY_URL); KEY a client key (default $FREEWAY_KEY).
  FILE  the request log of tests/clients/mock_upstream.py: with it, the checks also look at
        what reached the upstream.
Expects the scripted upstream of tests/clients/mock_upstream.py behind Freeway. Every check
prints one line, `ok   NAME: ...` or `FAIL NAME: ...`; the exit status is 1 if any failed.
"""
import json
import time
import urllib.request

import anthropic
from checks import ARGS, check, expect, run, upstream_requests

TEXT = "hi there from mock"
MARKER = "hello-from-tool"
COMMAND = "echo " + MARKER
BASH_TOOL = {
    "name": "Bash",
    "description": "Run a shell command and return its output.",
    "input_schema": {
        "type": "object",
        "properties": {
            "command": {"type": "string", "description": "The command to run"},
            "description": {"type": "string"},
        },
        "required": ["command"],
    },
}

def client(**kw):
    opts = dict(base_url=ARGS.base_url, api_key=ARGS.api_key, max_retries=0, timeout=60)
    opts.update(kw)
    return anthropic.Anthropic(**opts)


def text_of(message):
    return "".join(b.text for b in message.content if b.type == "text")


def user(text):
    return [{"role": "user", "content": text}]


@check
def create_text():
    """messages.create: text, system prompt, stop_reason, usage, ids."""
    c = client()
    m = c.messages.create(model=ARGS.model, max_tokens=256, system="You are terse.", messages=user("say hi"))
    expect(m.type == "message" and m.role == "assistant", f"type/role: {m.type}/{m.role}")
    expect(m.id.startswith("msg_"), f"id {m.id!r} does not start with msg_")
    expect(m.model == ARGS.model, f"model {m.model!r}, asked for {ARGS.model!r}")
    expect([b.type for b in m.content] == ["text"], f"content types {[b.type for b in m.content]}")
    expect(m.content[0].text == TEXT, f"text {m.content[0].text!r}")
    expect(m.stop_reason == "end_turn", f"stop_reason {m.stop_reason!r}")
    expect(m.stop_sequence is None, f"stop_sequence {m.stop_sequence!r}")
    expect(m.usage.input_tokens > 0 and m.usage.output_tokens > 0, f"usage {m.usage}")
    expect(bool(m._request_id), "no request-id header (Message._request_id is empty)")
    return f"{m.content[0].text!r} {m.stop_reason} in={m.usage.input_tokens} out={m.usage.output_tokens} request_id={m._request_id}"


@check
def create_system_blocks_and_history():
    """System as text blocks with cache_control, a multi-turn history, metadata, sampling, stop_sequences."""
    c = client()
    m = c.messages.create(
        model=ARGS.model, max_tokens=256, metadata={"user_id": "u-1"}, stop_sequences=["\n\nHuman:"],
        # SDK 2.x has no temperature/top_p/top_k parameters any more; the API still takes them.
        extra_body={"temperature": 0.2, "top_p": 0.9, "top_k": 40},
        system=[{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Answer in English."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "hello"}]},
                  {"role": "assistant", "content": "Hello! How can I help?"},
                  {"role": "user", "content": [{"type": "text", "text": "say hi", "cache_control": {"type": "ephemeral"}}]}])
    expect(text_of(m) == TEXT, f"text {text_of(m)!r}")
    return repr(text_of(m))


# A 1x1 PNG.
PNG_B64 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")


@check
def image_block():
    """An image block (base64 source) reaches the upstream as an image part."""
    c = client()
    since = time.time()
    m = c.messages.create(model=ARGS.model, max_tokens=256, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
        {"type": "text", "text": "say hi"}]}])
    expect(text_of(m) == TEXT, f"text {text_of(m)!r}")
    seen = upstream_requests(since)
    if seen is not None:
        parts = seen[-1]["body"]["messages"][-1].get("content")
        urls = [p.get("image_url", {}).get("url", "") for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []
        expect(any(u.startswith("data:image/png;base64,") for u in urls), f"upstream content {json.dumps(parts)[:400]}")
    return repr(text_of(m))


@check
def stream_helper():
    """messages.stream: text_stream, get_final_message."""
    c = client()
    with c.messages.stream(model=ARGS.model, max_tokens=256, system="You are terse.", messages=user("say hi")) as s:
        pieces = list(s.text_stream)
        final = s.get_final_message()
        request_id = s.request_id
    expect("".join(pieces) == TEXT, f"text_stream pieces {pieces!r}")
    expect(text_of(final) == TEXT, f"final text {text_of(final)!r}")
    expect(final.stop_reason == "end_turn", f"stop_reason {final.stop_reason!r}")
    expect(final.usage.output_tokens and final.usage.output_tokens > 0, f"usage {final.usage}")
    expect(final.usage.input_tokens > 0, f"usage {final.usage}")
    expect(final.model == ARGS.model, f"model {final.model!r}")
    expect(bool(request_id), "no request-id header on the stream")
    return f"{len(pieces)} text pieces, final {text_of(final)!r}, usage in={final.usage.input_tokens} out={final.usage.output_tokens}"


def expect_event_sequence(types):
    """message_start, then blocks (start, delta+, stop), message_delta, message_stop."""
    t = [x for x in types if x != "ping"]
    expect(t and t[0] == "message_start", f"first event is not message_start: {types}")
    expect(t[-2:] == ["message_delta", "message_stop"], f"does not end with message_delta, message_stop: {types}")
    i, blocks = 1, 0
    while t[i] == "content_block_start":
        i += 1
        deltas = 0
        while t[i] == "content_block_delta":
            i += 1
            deltas += 1
        expect(deltas >= 1, f"a content block without deltas: {types}")
        expect(t[i] == "content_block_stop", f"block not closed by content_block_stop: {types}")
        i += 1
        blocks += 1
    expect(blocks >= 1, f"no content block: {types}")
    expect(i == len(t) - 2, f"unexpected events between the blocks and message_delta: {types}")
    return blocks


@check
def raw_stream_event_sequence():
    """stream=True: the exact event sequence, block indices, message_delta usage."""
    c = client()
    events = list(c.messages.create(model=ARGS.model, max_tokens=256, messages=user("say hi"), stream=True))
    types = [e.type for e in events]
    expect_event_sequence(types)
    start = events[0].message
    expect(start.content == [], f"message_start content {start.content!r}")
    expect(start.usage is not None and start.usage.input_tokens is not None, "message_start without usage")
    expect(start.id.startswith("msg_"), f"message id {start.id!r}")
    indices = [e.index for e in events if e.type == "content_block_start"]
    expect(indices == list(range(len(indices))), f"block indices {indices}")
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")
    expect(text == TEXT, f"streamed text {text!r}")
    md = [e for e in events if e.type == "message_delta"][-1]
    expect(md.delta.stop_reason == "end_turn", f"message_delta stop_reason {md.delta.stop_reason!r}")
    expect(md.usage is not None and md.usage.output_tokens > 0, f"message_delta usage {md.usage}")
    return " ".join(types)


@check
def wire_format_event_lines():
    """Every SSE event has an `event:` line equal to its data's type (the SDKs dispatch on it);
    x-api-key auth, anthropic-version 2023-06-01 and ?beta=true as Claude Code sends them."""
    body = {"model": ARGS.model, "max_tokens": 256, "stream": True, "messages": user("say hi"),
            "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
            "thinking": {"type": "adaptive"}, "metadata": {"user_id": json.dumps({"session": "s"})},
            "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            "output_config": {"effort": "high"}}
    req = urllib.request.Request(
        ARGS.base_url.rstrip("/") + "/v1/messages?beta=true", data=json.dumps(body).encode(), method="POST",
        headers={"x-api-key": ARGS.api_key, "anthropic-version": "2023-06-01", "content-type": "application/json",
                 "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27"})
    with urllib.request.urlopen(req, timeout=60) as r:
        ctype = r.headers.get("content-type", "")
        raw = r.read().decode()
    expect(ctype.startswith("text/event-stream"), f"content-type {ctype!r}")
    names = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        lines = [l for l in block.split("\n") if l and not l.startswith(":")]
        if not lines:
            continue
        event = [l[6:].strip() for l in lines if l.startswith("event:")]
        data = [l[5:].strip() for l in lines if l.startswith("data:")]
        expect(len(event) == 1 and len(data) == 1, f"an SSE event without exactly one event: and data: line: {block!r}")
        payload = json.loads(data[0])
        expect(payload.get("type") == event[0], f"event: {event[0]} but data type {payload.get('type')!r}")
        names.append(event[0])
    expect_event_sequence(names)
    return f"{len(names)} events, each with a matching event: line"


@check
def tool_use_round_trip():
    """A streamed tool_use (input_json_delta) with dict input, then tool_result -> text."""
    c = client()
    since = time.time()
    msgs = user("please run the command")
    with c.messages.stream(model=ARGS.model, max_tokens=512, tools=[BASH_TOOL], messages=msgs) as s:
        kinds = [e.type for e in s]
        first = s.get_final_message()
    expect(first.stop_reason == "tool_use", f"stop_reason {first.stop_reason!r}")
    expect("input_json" in kinds, f"no input_json helper event (input_json_delta) in {kinds}")
    uses = [b for b in first.content if b.type == "tool_use"]
    expect(len(uses) == 1, f"content types {[b.type for b in first.content]}")
    tu = uses[0]
    expect(tu.name == "Bash", f"tool name {tu.name!r}")
    expect(isinstance(tu.input, dict) and tu.input.get("command") == COMMAND, f"tool input {tu.input!r}")
    expect(isinstance(tu.id, str) and tu.id, f"tool_use id {tu.id!r}")
    expect(first.content[-1].type == "tool_use", "the tool_use block is not the last block")
    msgs = msgs + [
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tu.id, "content": MARKER}]}]
    second = c.messages.create(model=ARGS.model, max_tokens=512, tools=[BASH_TOOL], messages=msgs)
    expect(second.stop_reason == "end_turn", f"second stop_reason {second.stop_reason!r}")
    expect(MARKER in text_of(second), f"second text {text_of(second)!r}")
    seen = upstream_requests(since)
    if seen is not None:
        last = seen[-1]["body"]["messages"]
        tool_msgs = [m for m in last if m.get("role") == "tool"]
        expect(tool_msgs, f"the upstream saw no tool message: {json.dumps(last)[:600]}")
        calls = [m for m in last if m.get("role") == "assistant" and m.get("tool_calls")]
        expect(calls, f"the upstream saw no assistant tool_calls: {json.dumps(last)[:600]}")
        call_id = calls[-1]["tool_calls"][0].get("id")
        expect(call_id and tool_msgs[-1].get("tool_call_id") == call_id,
               f"tool_call_id {tool_msgs[-1].get('tool_call_id')!r} does not answer the call {call_id!r}")
        expect(MARKER in json.dumps(tool_msgs[-1].get("content")), f"tool message content {tool_msgs[-1]}")
    return f"tool_use {tu.name} {tu.input} -> {text_of(second)!r}"


@check
def tool_use_non_streaming_and_block_results():
    """Non-streamed tool_use; tool_result with block content and is_error; tool_choice."""
    c = client()
    msgs = user("please run the command")
    first = c.messages.create(model=ARGS.model, max_tokens=512, tools=[BASH_TOOL], messages=msgs,
                              tool_choice={"type": "auto"})
    expect(first.stop_reason == "tool_use", f"stop_reason {first.stop_reason!r}")
    tu = next((b for b in first.content if b.type == "tool_use"), None)
    expect(tu is not None, f"no tool_use block: {first.content}")
    expect(tu.input.get("command") == COMMAND, f"tool input {tu.input!r}")
    msgs = msgs + [
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tu.id, "is_error": False,
                                      "content": [{"type": "text", "text": MARKER}]}]}]
    since = time.time()
    second = c.messages.create(model=ARGS.model, max_tokens=512, tools=[BASH_TOOL], messages=msgs,
                               tool_choice={"type": "tool", "name": "Bash"})
    expect(MARKER in text_of(second), f"second text {text_of(second)!r}")
    seen = upstream_requests(since)
    if seen is not None:
        tc = seen[-1]["body"].get("tool_choice")
        expect(isinstance(tc, dict) and (tc.get("function") or {}).get("name") == "Bash",
               f"upstream tool_choice {tc!r} for tool_choice tool Bash")
    return f"{[b.type for b in first.content]} -> {text_of(second)!r}"


@check
def raw_stream_tool_use_blocks():
    """A streamed text + tool_use answer: blocks 0 (text) and 1 (tool_use with id, name, input {}),
    input_json_delta pieces that join into the input, stop_reason tool_use."""
    c = client()
    events = list(c.messages.create(model=ARGS.model, max_tokens=256, tools=[BASH_TOOL], stream=True,
                                    messages=user("please run the command")))
    expect_event_sequence([e.type for e in events])
    starts = [e for e in events if e.type == "content_block_start"]
    expect([(e.index, e.content_block.type) for e in starts] == [(0, "text"), (1, "tool_use")],
           f"blocks {[(e.index, e.content_block.type) for e in starts]}")
    tu = starts[1].content_block
    expect(tu.id and tu.name == "Bash" and tu.input == {}, f"tool_use start {tu}")
    pieces = [e.delta.partial_json for e in events if e.type == "content_block_delta" and e.index == 1]
    expect(all(isinstance(p, str) for p in pieces), f"tool_use deltas {pieces}")
    expect(json.loads("".join(pieces))["command"] == COMMAND, f"input_json_delta pieces {pieces}")
    md = [e for e in events if e.type == "message_delta"][-1]
    expect(md.delta.stop_reason == "tool_use", f"stop_reason {md.delta.stop_reason!r}")
    return f"{len(pieces)} input_json_delta pieces"


@check
def tool_choice_and_tool_result_shapes():
    """tool_choice none/any reach the upstream as none/required; a tool_result holding an image
    and an is_error result arrive as tool messages the upstream accepts."""
    c = client()
    since = time.time()
    m = c.messages.create(model=ARGS.model, max_tokens=256, tools=[BASH_TOOL], tool_choice={"type": "none"},
                          messages=user("please run the command"))
    expect(m.stop_reason == "end_turn" and text_of(m) == TEXT, f"tool_choice none: {m.stop_reason} {text_of(m)!r}")
    m = c.messages.create(model=ARGS.model, max_tokens=256, tools=[BASH_TOOL], messages=user("please run the command"),
                          tool_choice={"type": "any", "disable_parallel_tool_use": True})
    expect(m.stop_reason == "tool_use", f"tool_choice any: {m.stop_reason}")
    call = [{"role": "user", "content": "please run the command"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Bash",
                                               "input": {"command": COMMAND}}]}]
    m = c.messages.create(model=ARGS.model, max_tokens=256, tools=[BASH_TOOL], messages=call + [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [
            {"type": "text", "text": MARKER},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}}]}]}])
    m = c.messages.create(model=ARGS.model, max_tokens=256, tools=[BASH_TOOL], messages=call + [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True,
                                      "content": "command failed: " + MARKER}]}])
    expect(MARKER in text_of(m), f"is_error result: {text_of(m)!r}")
    seen = upstream_requests(since)
    if seen is not None:
        expect(len(seen) == 4, f"{len(seen)} upstream requests")
        tc = [e["body"].get("tool_choice") for e in seen[:2]]
        expect(tc == ["none", "required"], f"upstream tool_choice {tc}")
        image_turn = seen[2]["body"]["messages"]
        expect(any(m.get("role") == "tool" and MARKER in json.dumps(m.get("content")) for m in image_turn),
               f"image tool_result: {json.dumps(image_turn)[:500]}")
    return "tool_choice none/any, image and is_error tool results"


@check
def max_tokens_stop_reason():
    """An upstream finish_reason `length` is stop_reason max_tokens, streamed and not."""
    c = client()
    m = c.messages.create(model=ARGS.model, max_tokens=5, messages=user("stop at length"))
    expect(m.stop_reason == "max_tokens", f"stop_reason {m.stop_reason!r}")
    with c.messages.stream(model=ARGS.model, max_tokens=5, messages=user("stop at length")) as s:
        final = s.get_final_message()
    expect(final.stop_reason == "max_tokens", f"streamed stop_reason {final.stop_reason!r}")
    return f"{text_of(m)!r} max_tokens"


@check
def count_tokens():
    c = client()
    r = c.messages.count_tokens(model=ARGS.model, system="You are terse.", tools=[BASH_TOOL],
                                messages=user("say hi, and count these tokens"))
    expect(isinstance(r.input_tokens, int) and r.input_tokens > 0, f"input_tokens {r.input_tokens!r}")
    return f"input_tokens={r.input_tokens}"


@check
def claude_model_id_and_headers():
    """An unknown claude-* id is mapped by family ([anthropic], default auto); the answer echoes
    the requested id, X-Routed-Via names what served it; SPEC 2.2 headers are there."""
    c = client()
    for model in ("claude-sonnet-4-5-20250929", "claude-opus-4-8", "claude-haiku-4-5"):
        raw = c.messages.with_raw_response.create(model=model, max_tokens=64, messages=user("say hi"))
        m = raw.parse()
        expect(m.model == model, f"model {m.model!r}, asked for {model!r}")
        expect(text_of(m) == TEXT, f"text {text_of(m)!r}")
        h = raw.headers
        expect(h.get("x-routed-via") == "mock/" + ARGS.model, f"X-Routed-Via {h.get('x-routed-via')!r}")
        expect(h.get("x-fallback-attempts") == "0", f"X-Fallback-Attempts {h.get('x-fallback-attempts')!r}")
        expect(h.get("x-request-id"), "no X-Request-Id")
    with c.messages.with_streaming_response.create(model="claude-sonnet-4-5", max_tokens=64, messages=user("say hi"),
                                                   stream=True) as r:
        h = r.headers
        body = r.read().decode()
    expect(h.get("x-routed-via") == "mock/" + ARGS.model, f"streamed X-Routed-Via {h.get('x-routed-via')!r}")
    expect('"model":"claude-sonnet-4-5"' in body.replace(" ", ""), "the stream's message_start does not echo the model")
    return f"X-Routed-Via {h.get('x-routed-via')}"


@check
def thinking_history_and_settings():
    """thinking settings, and thinking/redacted_thinking blocks in the history (Claude Code echoes
    them with their signature) are accepted and not sent upstream."""
    c = client()
    since = time.time()
    m = c.messages.create(
        model=ARGS.model, max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "hello"},
                  {"role": "assistant", "content": [
                      {"type": "thinking", "thinking": "Let me think about it.", "signature": "sig-abc123"},
                      {"type": "redacted_thinking", "data": "cmVkYWN0ZWQ="},
                      {"type": "text", "text": "Hello!"}]},
                  {"role": "user", "content": "say hi"}])
    expect(text_of(m) == TEXT, f"text {text_of(m)!r}")
    m = c.messages.create(model=ARGS.model, max_tokens=2048, thinking={"type": "adaptive"}, messages=user("say hi"))
    expect(text_of(m) == TEXT, f"adaptive: text {text_of(m)!r}")
    seen = upstream_requests(since)
    if seen is not None:
        sent = json.dumps(seen[0]["body"]["messages"])
        expect("Let me think" not in sent and "cmVkYWN0ZWQ" not in sent, f"thinking sent upstream: {sent[:400]}")
    return "ok"


@check
def strict_response_validation():
    """The SDK's strict mode validates every field of every object against its models."""
    c = client(_strict_response_validation=True)
    m = c.messages.create(model=ARGS.model, max_tokens=64, messages=user("say hi"))
    with c.messages.stream(model=ARGS.model, max_tokens=64, messages=user("say hi")) as s:
        final = s.get_final_message()
    events = list(c.messages.create(model=ARGS.model, max_tokens=64, messages=user("please run the command"),
                                    tools=[BASH_TOOL], stream=True))
    t = c.messages.create(model=ARGS.model, max_tokens=64, messages=user("please run the command"), tools=[BASH_TOOL])
    n = c.messages.count_tokens(model=ARGS.model, messages=user("say hi"))
    expect(text_of(m) == TEXT and text_of(final) == TEXT and t.stop_reason == "tool_use" and n.input_tokens > 0,
           "unexpected answers")
    return f"{len(events)} streamed events validated"


@check
def error_unknown_model():
    c = client()
    try:
        c.messages.create(model="no-such-model", max_tokens=16, messages=user("hi"))
    except anthropic.NotFoundError as e:
        expect(isinstance(e.body, dict), f"body {e.body!r}")
        expect(e.body.get("type") == "error", f"body type {e.body!r}")
        expect(e.body["error"]["type"] == "not_found_error", f"error type {e.body!r}")
        expect(e.body["error"].get("message"), f"no message {e.body!r}")
        return f"404 {e.body['error']['type']}: {e.body['error']['message'][:80]}"
    raise AssertionError("no NotFoundError for model no-such-model")


@check
def error_bad_key():
    c = client(api_key="fw-wrong-key")
    try:
        c.messages.create(model=ARGS.model, max_tokens=16, messages=user("hi"))
    except anthropic.AuthenticationError as e:
        expect(e.body["error"]["type"] == "authentication_error", f"error {e.body!r}")
        return f"401 {e.body['error']['type']}"
    raise AssertionError("no AuthenticationError for a wrong key")


@check
def error_bad_request():
    c = client()
    try:
        c.messages.create(model=ARGS.model, max_tokens=16, messages="not a list")
    except anthropic.BadRequestError as e:
        expect(e.body["error"]["type"] == "invalid_request_error", f"error {e.body!r}")
        return f"400 {e.body['error']['type']}: {e.body['error']['message'][:80]}"
    raise AssertionError("no BadRequestError for messages that are not a list")


# Last: an upstream failure cools the upstream down for a few seconds.

@check
def upstream_rate_limit_is_rate_limit_error():
    """The upstream's 429 with nothing to fail over to: rate_limit_error with Retry-After."""
    c = client()
    try:
        c.messages.create(model=ARGS.model, max_tokens=64, messages=user("rate limit me"))
    except anthropic.RateLimitError as e:
        expect(e.body["error"]["type"] == "rate_limit_error", f"error {e.body!r}")
        retry = e.response.headers.get("retry-after")
        expect(retry and retry.isdigit(), f"Retry-After {retry!r}")
        time.sleep(min(int(retry), 6))  # let the cooldown pass for the checks after this one
        return f"429 {e.body['error']['type']}, Retry-After {retry}: {e.body['error']['message'][:80]}"
    raise AssertionError("no RateLimitError for an upstream 429")


@check
def upstream_400_is_relayed():
    """A 400 the upstream blames on the request is relayed, as invalid_request_error."""
    c = client()
    try:
        c.messages.create(model=ARGS.model, max_tokens=64, messages=user("refuse this"))
    except anthropic.BadRequestError as e:
        expect(e.body["error"]["type"] == "invalid_request_error", f"error {e.body!r}")
        expect("refused on purpose" in e.body["error"]["message"], f"message {e.body!r}")
        return f"400 {e.body['error']['type']}: {e.body['error']['message'][:80]}"
    raise AssertionError("no BadRequestError for an upstream 400")


@check
def stream_cut_after_content_is_an_error_event():
    """The upstream dies after the first text: the stream ends with an `error` event (api_error),
    never a made-up stop_reason."""
    c = client()
    seen, stop = [], None
    try:
        for e in c.messages.create(model=ARGS.model, max_tokens=64, messages=user("cut the answer"), stream=True):
            seen.append(e.type)
            if e.type == "message_delta":
                stop = e.delta.stop_reason
    except anthropic.APIStatusError as e:
        expect("content_block_delta" in seen, f"the error came before any content: {seen}")
        expect(stop is None, f"a message_delta with stop_reason {stop!r} before the error")
        expect(isinstance(e.body, dict) and e.body.get("type") == "error", f"error body {e.body!r}")
        expect(e.body["error"]["type"] == "api_error", f"error type {e.body!r}")
        return f"after {seen}: error event {e.body['error']['type']}: {e.body['error']['message'][:80]}"
    raise AssertionError(f"the stream ended without an error event: {seen} (stop_reason {stop!r})")


@check
def broken_answer_is_api_error():
    """A plain answer cut in the middle, with nowhere to fail over: 502 api_error."""
    c = client()
    try:
        c.messages.create(model=ARGS.model, max_tokens=64, messages=user("cut the answer"))
    except anthropic.APIStatusError as e:
        expect(e.status_code == 502, f"status {e.status_code} {e.body!r}")
        expect(e.body["error"]["type"] == "api_error", f"error {e.body!r}")
        return f"{e.status_code} {e.body['error']['type']}: {e.body['error']['message'][:100]}"
    raise AssertionError("a broken upstream answer gave no error")


def main():
    run("sdk_anthropic", __doc__, lambda a: f"anthropic {anthropic.__version__} against {a.base_url}, model {a.model}")


if __name__ == "__main__":
    main()
