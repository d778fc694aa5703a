#!/usr/bin/env python3
"""Freeway's /v1/responses, /v1/completions and /v1/chat/completions driven by the official
`openai` Python SDK.

Usage: sdk_openai.py [--base-url URL] [--api-key KEY] [--model M] [--mock-log FILE]
                     [--skip NAME,...] [--only NAME,...]
  URL   Freeway's root, without /v1 (default $FREEWAY_URL); KEY a client key ($FREEWAY_KEY).
  FILE  the request log of tests/clients/mock_upstream.py: with it, the checks also look at
        what reached the upstream.
Expects the scripted upstream of tests/clients/mock_upstream.py behind Freeway. Every check
prints one line, `ok   NAME: ...` or `FAIL NAME: ...`; the exit status is 1 if any failed.
"""
import json
import time

import openai
from checks import ARGS, check, expect, run, upstream_requests

TEXT = "hi there from mock"
MARKER = "hello-from-tool"
COMMAND = "echo " + MARKER
EXEC_TOOL = {
    "type": "function",
    "name": "exec_command",
    "description": "Run a shell command.",
    "parameters": {
        "type": "object",
        "properties": {"cmd": {"type": "string", "description": "The command"}},
        "required": ["cmd"],
        "additionalProperties": False,
    },
    "strict": True,
}

def client(**kw):
    opts = dict(base_url=ARGS.base_url.rstrip("/") + "/v1", api_key=ARGS.api_key, max_retries=0, timeout=60)
    opts.update(kw)
    return openai.OpenAI(**opts)


def expect_usage(u):
    expect(u is not None, "no usage")
    expect(u.input_tokens > 0 and u.output_tokens > 0, f"usage {u}")
    expect(u.total_tokens == u.input_tokens + u.output_tokens, f"total_tokens {u}")


# ---------------------------------------------------------------- responses

@check
def responses_create_text():
    """responses.create with a string input and instructions: output_text, status, usage."""
    c = client()
    r = c.responses.create(model=ARGS.model, input="say hi", instructions="You are terse.", max_output_tokens=256)
    expect(r.object == "response", f"object {r.object!r}")
    expect(r.id.startswith("resp_"), f"id {r.id!r}")
    expect(r.status == "completed", f"status {r.status!r}")
    expect(r.output_text == TEXT, f"output_text {r.output_text!r}")
    msgs = [o for o in r.output if o.type == "message"]
    expect(len(msgs) == 1 and msgs[0].role == "assistant", f"output {r.output}")
    expect([p.type for p in msgs[0].content] == ["output_text"], f"content {msgs[0].content}")
    expect_usage(r.usage)
    return f"{r.output_text!r} {r.status} usage in={r.usage.input_tokens} out={r.usage.output_tokens}"


@check
def responses_create_items():
    """Item input: developer/user/assistant messages with input_text/output_text parts,
    plus the fields Codex sends (store, include, prompt_cache_key, reasoning, parallel_tool_calls)."""
    c = client()
    r = c.responses.create(
        model=ARGS.model, store=False, include=["reasoning.encrypted_content"], prompt_cache_key="k-1",
        reasoning={"effort": "low"}, parallel_tool_calls=True, temperature=0.2, top_p=0.9,
        input=[
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be terse."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello!"}]},
            {"role": "user", "content": "say hi"},
        ])
    expect(r.status == "completed", f"status {r.status!r}")
    expect(r.output_text == TEXT, f"output_text {r.output_text!r}")
    return repr(r.output_text)


# A 1x1 PNG.
PNG_URL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")


@check
def responses_input_image():
    """An input_image part reaches the upstream as an image part."""
    c = client()
    since = time.time()
    r = c.responses.create(model=ARGS.model, input=[{"role": "user", "content": [
        {"type": "input_image", "image_url": PNG_URL, "detail": "auto"},
        {"type": "input_text", "text": "say hi"}]}])
    expect(r.output_text == TEXT, f"output_text {r.output_text!r}")
    seen = upstream_requests(since)
    if seen is not None:
        parts = seen[-1]["body"]["messages"][-1].get("content")
        urls = [p.get("image_url", {}).get("url", "") for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []
        expect(PNG_URL in urls, f"upstream content {json.dumps(parts)[:400]}")
    return repr(r.output_text)


@check
def responses_stream_helper():
    """responses.stream: text deltas and get_final_response."""
    c = client()
    deltas = []
    with c.responses.stream(model=ARGS.model, input="say hi", instructions="You are terse.") as s:
        for e in s:
            if e.type == "response.output_text.delta":
                deltas.append(e.delta)
        final = s.get_final_response()
    expect("".join(deltas) == TEXT, f"deltas {deltas!r}")
    expect(final.status == "completed", f"status {final.status!r}")
    expect(final.output_text == TEXT, f"final output_text {final.output_text!r}")
    expect_usage(final.usage)
    return f"{len(deltas)} deltas, final {final.output_text!r}"


@check
def responses_raw_stream_events():
    """stream=True: created, in_progress first, completed last, sequence_number 0,1,2,..."""
    c = client()
    events = list(c.responses.create(model=ARGS.model, input="say hi", stream=True))
    types = [e.type for e in events]
    seqs = [e.sequence_number for e in events]
    expect(types[:2] == ["response.created", "response.in_progress"], f"first events {types}")
    expect(types[-1] == "response.completed", f"last event {types}")
    expect(seqs == list(range(len(events))), f"sequence numbers {seqs}")
    order = ["response.output_item.added", "response.content_part.added", "response.output_text.delta",
             "response.output_text.done", "response.content_part.done", "response.output_item.done"]
    pos = [types.index(t) if t in types else -1 for t in order]
    expect(-1 not in pos and pos == sorted(pos), f"missing or out of order {order}: {types}")
    ids = {e.response.id for e in events if hasattr(e, "response")}
    expect(len(ids) == 1, f"lifecycle events carry different response ids {ids}")
    done = events[-1].response
    expect(done.status == "completed" and done.output_text == TEXT, f"completed response {done}")
    expect_usage(done.usage)
    return " ".join(t.removeprefix("response.") for t in types)


@check
def responses_function_call_round_trip():
    """function_call item with call_id, then function_call_output -> text (stateless)."""
    c = client()
    since = time.time()
    first_input = [{"role": "user", "content": "please run the command"}]
    r1 = c.responses.create(model=ARGS.model, input=first_input, tools=[EXEC_TOOL])
    calls = [o for o in r1.output if o.type == "function_call"]
    expect(len(calls) == 1, f"output {r1.output}")
    fc = calls[0]
    expect(fc.name == "exec_command", f"name {fc.name!r}")
    expect(json.loads(fc.arguments) == {"cmd": COMMAND}, f"arguments {fc.arguments!r}")
    expect(fc.call_id, "no call_id")
    expect(r1.status == "completed", f"status {r1.status!r}")
    r2 = c.responses.create(model=ARGS.model, tools=[EXEC_TOOL], input=first_input + [
        fc.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": fc.call_id, "output": MARKER}])
    expect(MARKER in r2.output_text, f"second output_text {r2.output_text!r}")
    seen = upstream_requests(since)
    if seen is not None:
        last = seen[-1]["body"]["messages"]
        tool_msgs = [m for m in last if m.get("role") == "tool"]
        expect(tool_msgs and tool_msgs[-1].get("tool_call_id") == fc.call_id,
               f"the upstream saw no tool message for {fc.call_id}: {json.dumps(last)[:600]}")
    return f"{fc.name}({fc.arguments}) call_id={fc.call_id} -> {r2.output_text!r}"


@check
def responses_function_call_streamed():
    """The stream helper with a function call: arguments deltas, the final item, then the
    round trip streamed too, echoing the call the way Codex does (id, status)."""
    c = client()
    first_input = [{"role": "user", "content": "please run the command"}]
    with c.responses.stream(model=ARGS.model, input=first_input, tools=[EXEC_TOOL]) as s:
        types = [e.type for e in s]
        final = s.get_final_response()
    expect("response.function_call_arguments.delta" in types, f"no arguments deltas: {types}")
    expect("response.function_call_arguments.done" in types, f"no arguments done: {types}")
    fc = next((o for o in final.output if o.type == "function_call"), None)
    expect(fc is not None, f"no function_call in {final.output}")
    expect(json.loads(fc.arguments) == {"cmd": COMMAND}, f"arguments {fc.arguments!r}")
    expect(fc.parsed_arguments is not None, "strict tool without parsed_arguments")
    kinds = [o.type for o in final.output]
    expect(kinds == ["message", "function_call"], f"output items {kinds} (the mock says a sentence, then calls)")
    echoed = {"type": "function_call", "id": fc.id or "fc_1", "status": "completed", "name": fc.name,
              "arguments": fc.arguments, "call_id": fc.call_id}
    output = {"type": "function_call_output", "id": "fco_1", "call_id": fc.call_id,
              "output": "Chunk ID: 1\nProcess exited with code 0\nOutput:\n" + MARKER + "\n"}
    with c.responses.stream(model=ARGS.model, tools=[EXEC_TOOL], input=first_input + [echoed, output]) as s:
        second = s.get_final_response()
    expect(MARKER in second.output_text, f"second output_text {second.output_text!r}")
    return f"{fc.name} {fc.arguments} -> {second.output_text!r}"


@check
def responses_history_items_codex_echoes():
    """What Codex sends back: a reasoning item (content null), the function_call with id and
    status, a function_call_output with an id and a list of parts; then a text answer."""
    c = client()
    since = time.time()
    r = c.responses.create(model=ARGS.model, tools=[EXEC_TOOL], input=[
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "please run the command"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Thinking."}],
         "content": None, "encrypted_content": "ZW5j"},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "I'll run it.", "annotations": [], "logprobs": []}]},
        {"type": "function_call", "id": "fc_1", "status": "completed", "name": "exec_command",
         "arguments": json.dumps({"cmd": COMMAND}), "call_id": "call_1"},
        {"type": "function_call_output", "id": "fco_1", "call_id": "call_1",
         "output": [{"type": "input_text", "text": MARKER}]}])
    expect(MARKER in r.output_text, f"output_text {r.output_text!r}")
    seen = upstream_requests(since)
    if seen is not None:
        sent = seen[-1]["body"]["messages"]
        expect("ZW5j" not in json.dumps(sent), "the reasoning item was sent upstream")
        expect([m["role"] for m in sent][-2:] == ["assistant", "tool"], f"roles {[m['role'] for m in sent]}")
    return repr(r.output_text)


@check
def responses_tool_choice():
    """tool_choice required / a named function reach the upstream as chat's tool_choice."""
    c = client()
    since = time.time()
    c.responses.create(model=ARGS.model, input="please run the command", tools=[EXEC_TOOL], tool_choice="required")
    c.responses.create(model=ARGS.model, input="please run the command", tools=[EXEC_TOOL],
                       tool_choice={"type": "function", "name": "exec_command"})
    seen = upstream_requests(since)
    if seen is not None:
        expect(len(seen) == 2, f"{len(seen)} upstream requests")
        tc = [e["body"].get("tool_choice") for e in seen]
        expect(tc[0] == "required", f"tool_choice required became {tc[0]!r}")
        expect(isinstance(tc[1], dict) and (tc[1].get("function") or {}).get("name") == "exec_command",
               f"tool_choice function became {tc[1]!r}")
        return f"upstream tool_choice {tc}"
    return "accepted"


@check
def responses_json_schema():
    """text.format json_schema: the answer parses and has the required key."""
    c = client()
    since = time.time()
    r = c.responses.create(model=ARGS.model, input="greet me", text={"format": {
        "type": "json_schema", "name": "greeting", "strict": True,
        "schema": {"type": "object", "properties": {"greeting": {"type": "string"}},
                   "required": ["greeting"], "additionalProperties": False}}})
    value = json.loads(r.output_text)
    expect(isinstance(value, dict) and "greeting" in value, f"output_text {r.output_text!r}")
    seen = upstream_requests(since)
    if seen is not None:
        rf = seen[-1]["body"].get("response_format") or {}
        expect(rf.get("type") == "json_schema", f"upstream response_format {rf}")
    return r.output_text


@check
def responses_incomplete():
    """An upstream finish_reason `length` is status incomplete, reason max_output_tokens."""
    c = client()
    r = c.responses.create(model=ARGS.model, input="stop at length", max_output_tokens=16)
    expect(r.status == "incomplete", f"status {r.status!r}")
    expect(r.incomplete_details and r.incomplete_details.reason == "max_output_tokens", f"{r.incomplete_details}")
    types = [e.type for e in c.responses.create(model=ARGS.model, input="stop at length", max_output_tokens=16,
                                                stream=True)]
    expect(types[-1] == "response.incomplete", f"last streamed event {types[-1]!r}")
    return f"{r.status} {r.incomplete_details.reason}; streamed ends {types[-1]}"


@check
def responses_previous_response_id_refused():
    c = client()
    try:
        c.responses.create(model=ARGS.model, input="say hi", previous_response_id="resp_123")
    except openai.BadRequestError as e:
        expect(e.status_code == 400, f"status {e.status_code}")
        return f"400: {e.message[:120]}"
    raise AssertionError("previous_response_id was accepted")


@check
def responses_errors():
    """Unknown model: 404 NotFoundError; wrong key: 401 AuthenticationError (OpenAI shape)."""
    c = client()
    try:
        c.responses.create(model="no-such-model", input="hi")
        raise AssertionError("no error for model no-such-model")
    except openai.NotFoundError as e:
        expect(isinstance(e.body, dict) and e.body.get("message"), f"body {e.body!r}")
        nf = f"404 {e.code}"
    try:
        client(api_key="fw-wrong-key").responses.create(model=ARGS.model, input="hi")
        raise AssertionError("no error for a wrong key")
    except openai.AuthenticationError as e:
        auth = f"401 {e.code}"
    return f"{nf}; {auth}"


# ---------------------------------------------------------------- legacy completions

@check
def completions_create():
    c = client()
    r = c.completions.create(model=ARGS.model, prompt="say hi", max_tokens=64)
    expect(r.object == "text_completion", f"object {r.object!r}")
    expect(len(r.choices) == 1, f"choices {r.choices}")
    ch = r.choices[0]
    expect(ch.text == TEXT, f"text {ch.text!r}")
    expect(ch.finish_reason == "stop" and ch.index == 0, f"choice {ch}")
    expect(r.usage and r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0, f"usage {r.usage}")
    return f"{ch.text!r} {ch.finish_reason} usage={r.usage.total_tokens}"


@check
def completions_stream():
    c = client()
    chunks = list(c.completions.create(model=ARGS.model, prompt=["say hi"], max_tokens=64, stream=True,
                                       stream_options={"include_usage": True}))
    expect(all(ch.object == "text_completion" for ch in chunks), f"objects {[ch.object for ch in chunks]}")
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    expect(text == TEXT, f"streamed text {text!r}")
    expect(finishes[-1] == "stop" and all(f is None for f in finishes[:-1]), f"finish reasons {finishes}")
    usage = [ch.usage for ch in chunks if ch.usage]
    expect(usage and usage[-1].total_tokens > 0, "no usage chunk with stream_options.include_usage")
    return f"{len(chunks)} chunks {text!r}"


@check
def completions_suffix_and_refusals():
    """suffix (fill in the middle) is answered; n > 1 and echo are refused with a 400."""
    c = client()
    r = c.completions.create(model=ARGS.model, prompt="def greet():\n    return ", suffix="\n\nprint(greet())\n",
                             max_tokens=32)
    expect(r.choices[0].text, f"empty text {r.choices}")
    refused = []
    for kw in ({"n": 2}, {"echo": True}):
        try:
            c.completions.create(model=ARGS.model, prompt="say hi", max_tokens=8, **kw)
            raise AssertionError(f"{kw} was accepted")
        except openai.BadRequestError:
            refused.append(next(iter(kw)))
    return f"suffix -> {r.choices[0].text!r}; refused {refused}"


# ---------------------------------------------------------------- chat completions and models

@check
def chat_completions_still_fine():
    c = client()
    r = c.chat.completions.create(model=ARGS.model, messages=[{"role": "user", "content": "say hi"}])
    expect(r.choices[0].message.content == TEXT, f"content {r.choices[0].message.content!r}")
    parts = [ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        model=ARGS.model, messages=[{"role": "user", "content": "say hi"}], stream=True) if ch.choices]
    expect("".join(parts) == TEXT, f"streamed {parts!r}")
    return repr(r.choices[0].message.content)


@check
def headers_on_new_routes():
    """X-Routed-Via, X-Fallback-Attempts, X-Request-Id on responses and completions (SPEC 2.2)."""
    c = client()
    out = []
    for what, call in (
            ("responses", lambda: c.responses.with_raw_response.create(model=ARGS.model, input="say hi")),
            ("completions", lambda: c.completions.with_raw_response.create(model=ARGS.model, prompt="say hi")),
    ):
        raw = call()
        h = raw.headers
        expect(h.get("x-routed-via") == "mock/" + ARGS.model, f"{what}: X-Routed-Via {h.get('x-routed-via')!r}")
        expect(h.get("x-fallback-attempts") == "0", f"{what}: X-Fallback-Attempts {h.get('x-fallback-attempts')!r}")
        expect(h.get("x-request-id"), f"{what}: no X-Request-Id")
        expect(raw.parse().model == ARGS.model, f"{what}: model {raw.parse().model!r}")
        out.append(what)
    with c.responses.with_streaming_response.create(model=ARGS.model, input="say hi", stream=True) as r:
        expect(r.headers.get("x-routed-via") == "mock/" + ARGS.model, "streamed responses: no X-Routed-Via")
        r.read()
    return "on " + ", ".join(out) + " and a streamed response"


@check
def strict_response_validation():
    """The SDK's strict mode validates every field of every object against its models."""
    c = client(_strict_response_validation=True)
    r = c.responses.create(model=ARGS.model, input="say hi")
    f = c.responses.create(model=ARGS.model, input="please run the command", tools=[EXEC_TOOL])
    events = list(c.responses.create(model=ARGS.model, input="please run the command", tools=[EXEC_TOOL],
                                     stream=True))
    events += list(c.responses.create(model=ARGS.model, input="say hi", stream=True))
    inc = c.responses.create(model=ARGS.model, input="stop at length", max_output_tokens=16)
    # (Not completion chunks: the SDK's Completion model requires a finish_reason, which
    # OpenAI's own streams leave null until the last chunk.)
    cp = c.completions.create(model=ARGS.model, prompt="say hi")
    expect(r.output_text == TEXT and any(o.type == "function_call" for o in f.output) and inc.status == "incomplete"
           and cp.choices[0].text == TEXT, "unexpected answers")
    return f"responses, {len(events)} response events and a completion validated"


@check
def models_list_and_retrieve():
    c = client()
    ids = [m.id for m in c.models.list()]
    expect(ARGS.model in ids, f"{ARGS.model} not in {ids}")
    m = c.models.retrieve(ARGS.model)
    expect(m.id == ARGS.model, f"retrieve gave {m.id!r}")
    return f"{len(ids)} models; retrieve {m.id}"


# Last: an upstream failure cools the upstream down for a few seconds.

@check
def upstream_rate_limit_is_429():
    """The upstream's 429 with nothing to fail over to: 429 rate_limit_exceeded with Retry-After."""
    c = client()
    try:
        c.responses.create(model=ARGS.model, input="rate limit me")
    except openai.RateLimitError as e:
        retry = e.response.headers.get("retry-after")
        expect(retry and retry.isdigit(), f"Retry-After {retry!r}")
        time.sleep(min(int(retry), 6))  # let the cooldown pass for the checks after this one
        return f"429 {e.code}, Retry-After {retry}"
    raise AssertionError("no RateLimitError for an upstream 429")


@check
def upstream_400_is_relayed():
    c = client()
    try:
        c.responses.create(model=ARGS.model, input="refuse this")
    except openai.BadRequestError as e:
        expect("refused on purpose" in e.message, f"message {e.message!r}")
        return f"400 {e.code}: {e.message[:80]}"
    raise AssertionError("no BadRequestError for an upstream 400")


@check
def stream_cut_after_content_is_response_failed():
    """The upstream dies after the first text: the stream ends with response.failed (no
    response.completed); the helper's get_final_response refuses."""
    c = client()
    events = list(c.responses.create(model=ARGS.model, input="cut the answer", stream=True))
    types = [e.type for e in events]
    expect("response.output_text.delta" in types, f"no content before the failure: {types}")
    expect(types[-1] == "response.failed", f"last event {types[-1]!r}: {types}")
    expect("response.completed" not in types, f"a completed response after a failure: {types}")
    seqs = [e.sequence_number for e in events]
    expect(seqs == list(range(len(events))), f"sequence numbers {seqs}")
    err = events[-1].response.error
    expect(events[-1].response.status == "failed" and err is not None and err.message, f"failed response {events[-1]}")
    with c.responses.stream(model=ARGS.model, input="cut the answer") as s:
        try:
            s.get_final_response()
            raise AssertionError("get_final_response() gave an answer to a failed stream")
        except RuntimeError:
            pass
    return f"{' '.join(t.removeprefix('response.') for t in types)}; error {err.code}: {err.message[:80]}"


@check
def completions_stream_cut_is_an_error():
    c = client()
    try:
        for _ in c.completions.create(model=ARGS.model, prompt="cut the answer", stream=True):
            pass
    except openai.APIError as e:
        return f"APIError: {e.message[:100]}"
    raise AssertionError("a cut completions stream ended without an error")


@check
def broken_answer_is_502():
    c = client()
    try:
        c.responses.create(model=ARGS.model, input="cut the answer")
    except openai.APIStatusError as e:
        expect(e.status_code == 502, f"status {e.status_code}")
        return f"{e.status_code} {e.code}: {e.message[:100]}"
    raise AssertionError("a broken upstream answer gave no error")


# ---------------------------------------------------------------- embeddings

@check
def embeddings_default_base64_decoded_by_the_sdk():
    # The SDK asks for base64 unless told otherwise and decodes it itself.
    r = client().embeddings.create(model="mock-embed", input=["one two", "three"])
    expect(len(r.data) == 2, f"{len(r.data)} vectors")
    expect(r.data[0].embedding[:2] == [7.0, 1.0], f"first vector {r.data[0].embedding[:3]}")
    expect(r.data[1].embedding[:2] == [5.0, 0.0], f"second vector {r.data[1].embedding[:3]}")
    expect(r.usage.prompt_tokens == 3, f"usage {r.usage}")
    return f"{len(r.data)} vectors of {len(r.data[0].embedding)}"


@check
def embeddings_float_and_dimensions():
    r = client().embeddings.create(model="mock-embed", input="a b c", encoding_format="float", dimensions=4)
    expect(len(r.data[0].embedding) == 4, f"size {len(r.data[0].embedding)}")
    expect(r.model == "mock-embed", f"model {r.model}")
    return f"{r.data[0].embedding}"


@check
def embeddings_unknown_model_is_404():
    try:
        client().embeddings.create(model="no-such-embedder", input="x")
    except openai.NotFoundError as e:
        return f"{e.status_code}: {e.message[:80]}"
    raise AssertionError("an unknown embedding model gave no error")


def main():
    run("sdk_openai", __doc__, lambda a: f"openai {openai.__version__} against {a.base_url}, model {a.model}")


if __name__ == "__main__":
    main()
