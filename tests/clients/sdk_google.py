#!/usr/bin/env python3
"""Freeway's Gemini API surface (/v1beta) driven by the official `google-genai` Python SDK.

Usage: sdk_google.py [--base-url URL] [--api-key KEY] [--model M] [--mock-log FILE]
                     [--skip NAME,...] [--only NAME,...]
  URL   Freeway's root (default $FREEWAY_URL); KEY a client key (default $FREEWAY_KEY), sent
        by the SDK as `x-goog-api-key`.
  FILE  the request log of tests/clients/mock_upstream.py: with it, the checks also look at
        what reached the upstream.
Expects the scripted upstream of tests/clients/mock_upstream.py behind Freeway. Every check
prints one line, `ok   NAME: ...` or `FAIL NAME: ...`; the exit status is 1 if any failed.
"""
import json
import time

import pydantic
from google import genai
from google.genai import errors, types
from checks import ARGS, check, expect, run, upstream_requests

TEXT = "hi there from mock"
MARKER = "hello-from-tool"
COMMAND = "echo " + MARKER
SHELL_TOOL = types.Tool(function_declarations=[types.FunctionDeclaration(
    name="run_shell_command",
    description="Run a shell command and return its output.",
    parameters=types.Schema(type=types.Type.OBJECT, properties={
        "command": types.Schema(type=types.Type.STRING, description="The command to run"),
        "description": types.Schema(type=types.Type.STRING, nullable=True),
    }, required=["command"]),
)])
# A 1x1 PNG.
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
                    "0000000d49444154789c63fccf00000301010018dd8db00000000049454e44ae426082")


def client(**kw):
    opts = dict(api_key=ARGS.api_key,
                # No retries: an error must show as itself, at once.
                http_options={"base_url": ARGS.base_url, "timeout": 60_000, "retry_options": {"attempts": 1}})
    opts.update(kw)
    return genai.Client(**opts)


def finish(response):
    return response.candidates[0].finish_reason


@check
def generate_text():
    """generate_content: text, system instruction, sampling, finish reason, usage, ids."""
    c = client()
    since = time.time()
    r = c.models.generate_content(model=ARGS.model, contents="say hi", config=types.GenerateContentConfig(
        system_instruction="You are terse.", temperature=0.2, top_p=0.9, top_k=40, max_output_tokens=256,
        stop_sequences=["\n\nUser:"], candidate_count=1,
        safety_settings=[types.SafetySetting(category="HARM_CATEGORY_HARASSMENT", threshold="BLOCK_NONE")]))
    expect(r.text == TEXT, f"text {r.text!r}")
    expect(finish(r) == types.FinishReason.STOP, f"finish_reason {finish(r)!r}")
    u = r.usage_metadata
    expect(u.prompt_token_count > 0 and u.candidates_token_count > 0, f"usage {u}")
    expect(u.total_token_count == u.prompt_token_count + u.candidates_token_count, f"usage {u}")
    expect(r.model_version == "mock-model", f"model_version {r.model_version!r}")
    expect(bool(r.response_id), "no response_id")
    seen = upstream_requests(since)
    if seen is not None:
        body = seen[-1]["body"]
        expect(body["messages"][0] == {"role": "system", "content": "You are terse."}, f"upstream {body['messages']}")
        expect(body.get("temperature") == 0.2 and body.get("top_k") == 40 and body.get("max_tokens") == 256,
               f"upstream sampling {json.dumps(body)[:300]}")
    return f"{r.text!r} {finish(r).name} prompt={u.prompt_token_count} total={u.total_token_count} model={r.model_version}"


@check
def history_and_image():
    """A multi-turn history and an inline image (bytes): the image reaches the upstream as a data URL."""
    c = client()
    since = time.time()
    r = c.models.generate_content(model=ARGS.model, contents=[
        types.Content(role="user", parts=[types.Part.from_text(text="hello")]),
        types.Content(role="model", parts=[types.Part.from_text(text="Hello! How can I help?")]),
        types.Content(role="user", parts=[types.Part.from_bytes(data=PNG, mime_type="image/png"),
                                          types.Part.from_text(text="say hi")]),
    ])
    expect(r.text == TEXT, f"text {r.text!r}")
    seen = upstream_requests(since)
    if seen is not None:
        messages = seen[-1]["body"]["messages"]
        expect([m["role"] for m in messages] == ["user", "assistant", "user"], f"roles {messages}")
        parts = messages[-1]["content"]
        urls = [p.get("image_url", {}).get("url", "") for p in parts if isinstance(p, dict)]
        expect(any(u.startswith("data:image/png;base64,") for u in urls), f"upstream content {json.dumps(parts)[:300]}")
    return repr(r.text)


@check
def stream_text():
    """generate_content_stream: text pieces, then a last chunk with the finish reason and usage."""
    c = client()
    chunks = list(c.models.generate_content_stream(model=ARGS.model, contents="say hi"))
    text = "".join(ch.text or "" for ch in chunks)
    expect(text == TEXT, f"streamed text {text!r} from {len(chunks)} chunks")
    expect(len(chunks) >= 2, f"only {len(chunks)} chunk(s)")
    last = chunks[-1]
    expect(finish(last) == types.FinishReason.STOP, f"last finish_reason {finish(last)!r}")
    expect(last.usage_metadata and last.usage_metadata.total_token_count > 0, f"usage {last.usage_metadata}")
    expect(all(ch.candidates[0].finish_reason is None for ch in chunks[:-1]), "a finish reason before the end")
    return f"{len(chunks)} chunks, {text!r}, usage total={last.usage_metadata.total_token_count}"


@check
def function_call_round_trip():
    """A function declaration → functionCall (args an object, an id) → functionResponse → the answer."""
    c = client()
    config = types.GenerateContentConfig(tools=[SHELL_TOOL])
    ask = types.Content(role="user", parts=[types.Part.from_text(text="please run the command")])
    r = c.models.generate_content(model=ARGS.model, contents=[ask], config=config)
    calls = r.function_calls or []
    expect(len(calls) == 1, f"function calls {calls!r}, text {r.text!r}")
    call = calls[0]
    expect(call.name == "run_shell_command", f"name {call.name!r}")
    expect(call.args == {"command": COMMAND, "description": "Run it"}, f"args {call.args!r}")
    expect(bool(call.id), "the call has no id")
    expect(finish(r) == types.FinishReason.STOP, f"finish_reason {finish(r)!r}")
    since = time.time()
    answer = types.Part.from_function_response(name=call.name, response={"output": MARKER})
    answer.function_response.id = call.id
    r2 = c.models.generate_content(model=ARGS.model, config=config, contents=[
        ask, r.candidates[0].content, types.Content(role="user", parts=[answer])])
    expect(r2.text == "done: " + MARKER, f"answer {r2.text!r}")
    seen = upstream_requests(since)
    if seen is not None:
        messages = seen[-1]["body"]["messages"]
        tool = [m for m in messages if m["role"] == "tool"]
        expect(len(tool) == 1 and tool[0]["content"] == MARKER, f"upstream tool messages {tool}")
        expect(tool[0]["tool_call_id"] == messages[-2]["tool_calls"][0]["id"], f"upstream {messages}")
    return f"{call.name}({call.args}) id={call.id} → {r2.text!r}"


@check
def function_call_streamed():
    """A streamed function call arrives whole, with its arguments as an object."""
    c = client()
    chunks = list(c.models.generate_content_stream(model=ARGS.model, contents="please run the command",
                                                   config=types.GenerateContentConfig(tools=[SHELL_TOOL])))
    calls = [fc for ch in chunks for fc in (ch.function_calls or [])]
    expect(len(calls) == 1 and calls[0].args.get("command") == COMMAND, f"calls {calls!r}")
    expect(finish(chunks[-1]) == types.FinishReason.STOP, f"finish {finish(chunks[-1])!r}")
    return f"{len(chunks)} chunks, {calls[0].name}({calls[0].args})"


@check
def tool_config_modes():
    """functionCallingConfig NONE keeps the model from calling; ANY with one allowed name forces it."""
    c = client()
    since = time.time()
    none = c.models.generate_content(model=ARGS.model, contents="please run the command", config=types.GenerateContentConfig(
        tools=[SHELL_TOOL], tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="NONE"))))
    expect(not none.function_calls, f"called {none.function_calls!r} under NONE")
    anyc = c.models.generate_content(model=ARGS.model, contents="please run the command", config=types.GenerateContentConfig(
        tools=[SHELL_TOOL], tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(
            mode="ANY", allowed_function_names=["run_shell_command"]))))
    expect(anyc.function_calls and anyc.function_calls[0].name == "run_shell_command", f"ANY: {anyc.function_calls!r}")
    seen = upstream_requests(since)
    if seen is not None:
        choices = [e["body"].get("tool_choice") for e in seen]
        expect(choices[0] == "none", f"tool_choice {choices}")
        expect(choices[-1] == {"type": "function", "function": {"name": "run_shell_command"}}, f"tool_choice {choices}")
    return f"NONE → {none.text!r}; ANY → {anyc.function_calls[0].name}"


class City(pydantic.BaseModel):
    name: str
    population: int


@check
def json_schema_output():
    """response_mime_type application/json with a schema (a pydantic model): `parsed` is filled."""
    c = client()
    since = time.time()
    r = c.models.generate_content(model=ARGS.model, contents="a city", config=types.GenerateContentConfig(
        response_mime_type="application/json", response_schema=City))
    expect(isinstance(r.parsed, City), f"parsed {r.parsed!r} from {r.text!r}")
    seen = upstream_requests(since)
    if seen is not None:
        rf = seen[-1]["body"].get("response_format") or {}
        expect(rf.get("type") == "json_schema", f"upstream response_format {rf}")
        expect(rf["json_schema"]["schema"]["properties"]["population"]["type"] == "integer", f"schema {rf}")
    return repr(r.parsed)


@check
def count_tokens():
    c = client()
    r = c.models.count_tokens(model=ARGS.model, contents="hello there, how are you today?")
    expect(isinstance(r.total_tokens, int) and r.total_tokens > 0, f"total_tokens {r.total_tokens!r}")
    return f"total_tokens={r.total_tokens}"


@check
def models_list_and_get():
    c = client()
    models = list(c.models.list())
    names = [m.name for m in models]
    expect("models/auto" in names and "models/mock-model" in names, f"names {names}")
    m = c.models.get(model="mock-model")
    expect(m.name == "models/mock-model" and m.input_token_limit == 131072, f"model {m!r}")
    expect("generateContent" in (m.supported_actions or []), f"supported_actions {m.supported_actions!r}")
    return f"{names}; mock-model input_token_limit={m.input_token_limit}"


@check
def unknown_gemini_id_is_mapped():
    """An id Freeway does not know (a newer Gemini) goes through [gemini_api] (auto by default)."""
    c = client()
    r = c.models.generate_content(model="gemini-9.9-pro-preview", contents="say hi")
    expect(r.text == TEXT, f"text {r.text!r}")
    expect(r.model_version == "mock-model", f"model_version {r.model_version!r}")
    return f"gemini-9.9-pro-preview served by {r.model_version}"


@check
def embed_content():
    """models.embed_content: one or several texts (batchEmbedContents), vectors in order."""
    c = client()  # kept: the SDK closes its connection pool when the client is collected
    r = c.models.embed_content(model="mock-embed", contents=["one two", "three"])
    expect(len(r.embeddings) == 2, f"{len(r.embeddings)} embeddings")
    first, second = r.embeddings[0].values, r.embeddings[1].values
    expect(first[:2] == [7.0, 1.0] and second[:2] == [5.0, 0.0], f"{first[:2]} {second[:2]}")
    return f"{len(r.embeddings)} vectors of {len(first)}"


@check
def error_bad_key():
    c = client(api_key="fw-wrong-key")
    try:
        c.models.generate_content(model=ARGS.model, contents="hi")
    except errors.ClientError as e:
        expect(e.code == 401 and e.status == "UNAUTHENTICATED", f"{e.code} {e.status} {e.details!r}")
        return f"{e.code} {e.status}: {e.message[:80]}"
    raise AssertionError("no ClientError for a wrong key")


@check
def error_unknown_model():
    c = client()
    try:
        c.models.generate_content(model="no-such-model", contents="hi")
    except errors.ClientError as e:
        expect(e.code == 404 and e.status == "NOT_FOUND", f"{e.code} {e.status} {e.details!r}")
        return f"{e.code} {e.status}: {e.message[:80]}"
    raise AssertionError("no ClientError for model no-such-model")


@check
def error_bad_request():
    c = client()
    try:
        c.models.generate_content(model=ARGS.model, contents="hi", config={"candidate_count": 2})
    except errors.ClientError as e:
        expect(e.code == 400 and e.status == "INVALID_ARGUMENT", f"{e.code} {e.status} {e.details!r}")
        expect("candidateCount" in e.message, f"message {e.message!r}")
        return f"{e.code} {e.status}: {e.message[:80]}"
    raise AssertionError("no ClientError for candidate_count 2")


# Last: an upstream failure cools the upstream down for a few seconds.

@check
def upstream_rate_limit_is_resource_exhausted():
    c = client()
    try:
        c.models.generate_content(model=ARGS.model, contents="rate limit me")
    except errors.ClientError as e:
        expect(e.code == 429 and e.status == "RESOURCE_EXHAUSTED", f"{e.code} {e.status} {e.details!r}")
        retry = e.response.headers.get("retry-after") if e.response is not None else None
        expect(retry and retry.isdigit(), f"Retry-After {retry!r}")
        time.sleep(min(int(retry), 6))  # let the cooldown pass for the checks after this one
        return f"{e.code} {e.status}, Retry-After {retry}: {e.message[:80]}"
    raise AssertionError("no ClientError for an upstream 429")


@check
def stream_cut_after_content_is_an_error():
    """The upstream dies after the first text: the stream ends with an error object (INTERNAL),
    never a made-up finish reason."""
    c = client()
    seen = []
    try:
        for ch in c.models.generate_content_stream(model=ARGS.model, contents="cut the answer"):
            seen.append((ch.text, ch.candidates[0].finish_reason))
    except errors.APIError as e:
        expect(seen and seen[0][0], f"the error came before any content: {seen}")
        expect(all(f is None for _, f in seen), f"a finish reason before the error: {seen}")
        expect(e.code == 502 and e.status == "INTERNAL", f"{e.code} {e.status} {e.details!r}")
        return f"after {seen}: {e.code} {e.status}: {e.message[:80]}"
    raise AssertionError(f"the stream ended without an error: {seen}")


def main():
    run("sdk_google", __doc__, lambda a: f"google-genai {genai.__version__} against {a.base_url}, model {a.model}")


if __name__ == "__main__":
    main()
