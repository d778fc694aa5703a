#!/usr/bin/env python3
"""Freeway's Ollama API (/api/*) driven by the official `ollama` Python client: on the main port
with the client key as `Authorization: Bearer`, and on the key-less Ollama listener.

Usage: sdk_ollama.py [--base-url URL] [--api-key KEY] [--model M] [--mock-log FILE]
                     [--skip NAME,...] [--only NAME,...]
  URL   Freeway's root (default $FREEWAY_URL); KEY a client key ($FREEWAY_KEY).
  $FREEWAY_OLLAMA_URL  the key-less Ollama listener (`[ollama] listen`); its checks fail
        without it.
  FILE  the request log of tests/clients/mock_upstream.py: with it, the checks also look at
        what reached the upstream.
Expects the scripted upstream of tests/clients/mock_upstream.py behind Freeway. Every check
prints one line, `ok   NAME: ...` or `FAIL NAME: ...`; the exit status is 1 if any failed.
"""
import json
import os
import time

import ollama
from checks import ARGS, check, expect, run, upstream_requests

TEXT = "hi there from mock"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather of a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city"}},
            "required": ["city"],
        },
    },
}


def client():
    return ollama.Client(host=ARGS.base_url, headers={"Authorization": f"Bearer {ARGS.api_key}"}, timeout=60)


def keyless():
    url = os.environ.get("FREEWAY_OLLAMA_URL")
    expect(url, "FREEWAY_OLLAMA_URL is not set: where is the key-less Ollama listener?")
    return ollama.Client(host=url, timeout=60)


def model_name():
    return ARGS.model + ":latest"


@check
def list_models():
    """list(): `auto` and the served model, Ollama-named, with digests and details."""
    r = client().list()
    names = [m.model for m in r.models]
    expect(names[0] == "auto:latest", f"names {names}")
    expect(model_name() in names, f"names {names}")
    m = next(m for m in r.models if m.model == model_name())
    expect(len(m.digest) == 64, f"digest {m.digest!r}")
    expect(m.details.family, f"details {m.details}")
    return f"{names}"


@check
def show_model():
    """show(): capabilities and the context length, as the catalog says."""
    r = client().show(model_name())
    expect("completion" in r.capabilities and "tools" in r.capabilities, f"capabilities {r.capabilities}")
    arch = r.modelinfo["general.architecture"]
    ctx = r.modelinfo[f"{arch}.context_length"]
    expect(ctx == 131072, f"context {ctx}")
    e = client().show("mock-embed")
    expect(e.capabilities == ["embedding"], f"embedding model capabilities {e.capabilities}")
    return f"{r.capabilities} context={ctx}; mock-embed {e.capabilities}"


@check
def embed_both_ways():
    """embed() and the older embeddings(): vectors of an embedding model, in input order."""
    r = client().embed(model="mock-embed", input=["one two", "three"])
    expect(len(r.embeddings) == 2, f"{len(r.embeddings)} vectors")
    expect(r.embeddings[0][:2] == [7.0, 1.0] and r.embeddings[1][:2] == [5.0, 0.0], f"{r.embeddings}")
    old = client().embeddings(model="mock-embed", prompt="a b")
    expect(old.embedding[:2] == [3.0, 1.0], f"{old.embedding}")
    return f"{len(r.embeddings)} vectors of {len(r.embeddings[0])}"


@check
def chat_whole():
    """chat(stream=False) with options: the answer, the counts, the options upstream."""
    since = time.time()
    r = client().chat(model=ARGS.model, messages=[{"role": "user", "content": "say hi"}], stream=False,
                      options={"temperature": 0.2, "num_predict": 64, "num_ctx": 8192, "seed": 3})
    expect(r.message.role == "assistant" and r.message.content == TEXT, f"message {r.message}")
    expect(r.done and r.done_reason == "stop", f"done {r.done} {r.done_reason}")
    expect(r.prompt_eval_count > 0 and r.eval_count > 0, f"counts {r.prompt_eval_count} {r.eval_count}")
    sent = upstream_requests(since)
    if sent is not None:
        body = sent[-1]["body"]
        expect(body.get("max_tokens") == 64 and body.get("seed") == 3 and body.get("temperature") == 0.2, f"upstream {body}")
        expect("num_ctx" not in body and "options" not in body, f"upstream {body}")
    return f"{r.message.content!r} in={r.prompt_eval_count} out={r.eval_count}"


@check
def chat_stream():
    """chat(stream=True): pieces of text, then a done chunk with the counts."""
    chunks = list(client().chat(model=ARGS.model, messages=[{"role": "user", "content": "say hi"}], stream=True))
    text = "".join(c.message.content or "" for c in chunks)
    expect(text == TEXT, f"text {text!r}")
    expect(len(chunks) >= 2, f"{len(chunks)} chunks")
    expect(all(not c.done for c in chunks[:-1]) and chunks[-1].done, "done only at the end")
    expect(chunks[-1].done_reason == "stop" and chunks[-1].eval_count, f"last {chunks[-1]}")
    return f"{len(chunks)} chunks, {text!r}"


@check
def tools_round_trip():
    """A tool call with object arguments, its result sent back as a `tool` message."""
    c = client()
    messages = [{"role": "user", "content": "run the weather tool for me"}]
    r = c.chat(model=ARGS.model, messages=messages, tools=[WEATHER], stream=False)
    calls = r.message.tool_calls or []
    expect(len(calls) == 1 and calls[0].function.name == "get_weather", f"calls {calls}")
    expect(calls[0].function.arguments == {"city": "hello"}, f"arguments {calls[0].function.arguments!r}")
    messages.append(r.message)
    messages.append({"role": "tool", "content": "sunny, 21C", "tool_name": "get_weather"})
    r2 = c.chat(model=ARGS.model, messages=messages, tools=[WEATHER], stream=False)
    expect(r2.message.content == "done: sunny, 21C", f"after the tool {r2.message.content!r}")
    # Streamed, the call arrives whole.
    chunks = list(c.chat(model=ARGS.model, messages=messages[:1], tools=[WEATHER], stream=True))
    streamed = [t for ch in chunks for t in (ch.message.tool_calls or [])]
    expect(len(streamed) == 1 and streamed[0].function.arguments == {"city": "hello"}, f"streamed {streamed}")
    return f"{calls[0].function.name}({calls[0].function.arguments}) -> {r2.message.content!r}"


@check
def chat_image():
    """An image as bytes: the client sends base64, the upstream gets a data: URL."""
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(32))
    since = time.time()
    r = client().chat(model=ARGS.model, messages=[{"role": "user", "content": "what is this?", "images": [png]}],
                      stream=False)
    expect(r.message.content == TEXT, f"message {r.message}")
    sent = upstream_requests(since)
    if sent is not None:
        parts = sent[-1]["body"]["messages"][-1]["content"]
        urls = [p["image_url"]["url"] for p in parts if p.get("type") == "image_url"]
        expect(len(urls) == 1 and urls[0].startswith("data:image/png;base64,iVBORw0KGgo"), f"upstream parts {parts}")
    return f"{r.message.content!r}"


@check
def format_schema():
    """format=<JSON schema>: structured output that parses."""
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"]}
    r = client().chat(model=ARGS.model, messages=[{"role": "user", "content": "who?"}], format=schema, stream=False)
    value = json.loads(r.message.content)
    expect(value == {"name": "hello", "age": 1}, f"value {value}")
    return f"{value}"


@check
def generate_prompt_and_suffix():
    """generate(): prompt with system, a fill-in-the-middle suffix, and the load call."""
    c = client()
    r = c.generate(model=ARGS.model, prompt="say hi", system="Be terse.")
    expect(r.response == TEXT and r.done, f"response {r.response!r}")
    r = c.generate(model=ARGS.model, prompt="def f():\n    ", suffix="\n\nf()")
    expect(r.response == TEXT, f"fim {r.response!r}")
    chunks = list(c.generate(model=ARGS.model, prompt="say hi", stream=True))
    expect("".join(ch.response for ch in chunks) == TEXT and chunks[-1].done, f"stream {chunks}")
    load = c.generate(model=ARGS.model)
    expect(load.done and load.done_reason == "load", f"load {load}")
    return f"{r.response!r}, {len(chunks)} chunks, load={load.done_reason}"


@check
def errors_are_response_errors():
    """An unknown model (404), pull (501), a wrong key (401), a stream cut after content."""
    c = client()
    seen = []
    for what, call, status in [
        ("unknown model", lambda: c.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}]), 404),
        ("pull", lambda: c.pull(ARGS.model), 501),
        ("wrong key", lambda: ollama.Client(host=ARGS.base_url, headers={"Authorization": "Bearer fw-wrong"}).list(), 401),
    ]:
        try:
            call()
        except ollama.ResponseError as e:
            expect(e.status_code == status, f"{what}: status {e.status_code} ({e.error})")
            seen.append(f"{what} {e.status_code}")
            continue
        raise AssertionError(f"{what}: no ResponseError")
    try:
        for _ in c.chat(model=ARGS.model, messages=[{"role": "user", "content": "cut the answer"}], stream=True):
            pass
    except ollama.ResponseError as e:
        expect("broke" in e.error, f"cut: {e.error}")
        seen.append("cut stream")
    else:
        raise AssertionError("a cut stream ended without an error")
    return ", ".join(seen)


@check
def keyless_listener():
    """The Ollama listener: list and chat without any key."""
    c = keyless()
    names = [m.model for m in c.list().models]
    expect(model_name() in names, f"names {names}")
    r = c.chat(model=model_name(), messages=[{"role": "user", "content": "say hi"}], stream=False)
    expect(r.message.content == TEXT, f"message {r.message}")
    chunks = list(c.chat(model=ARGS.model, messages=[{"role": "user", "content": "say hi"}], stream=True))
    expect("".join(ch.message.content for ch in chunks) == TEXT, f"stream {chunks}")
    expect(c.ps().models == [], "ps lists nothing")
    return f"{len(names)} models, {r.message.content!r}"


def main():
    run("sdk_ollama", __doc__, lambda a: f"ollama client against {a.base_url} and {os.environ.get('FREEWAY_OLLAMA_URL')}, model {a.model}")


if __name__ == "__main__":
    main()
