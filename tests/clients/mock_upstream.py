#!/usr/bin/env python3
"""A scripted OpenAI chat-completions upstream for the client tests (standard library only).

Usage: mock_upstream.py [PORT [LOGFILE]]
  PORT     0 (the default) picks a free port.
  LOGFILE  every request is appended to it as one JSON line {"method", "path", "headers",
           "body"}; default: $MOCK_LOG, else no log.
The first line on stdout is `listening on 127.0.0.1:PORT`.

Routes: POST /v1/chat/completions (streamed or not), GET /v1/models. Anything else is a 404.
A chat request OpenAI would refuse (a field chat completions does not have, a malformed
message, a tool message that answers no call...) gets OpenAI's 400, naming what is wrong.

What it answers, decided by the request (so agent tool turns work without a script):
  1. The last conversation message (system/developer messages skipped) has role `tool`:
     the text "done: <line>", <line> being the tool output's line that holds
     "hello-from-tool", else its first non-empty line.
  2. The last user text asks to "run" something (the word, any case) and the request has
     tools: one tool call, after the text "I'll run it.":
       `Bash`          {"command": "echo hello-from-tool", "description": "Run it"}
       `exec_command`  {"cmd": "echo hello-from-tool"}
       `shell`         {"command": ["bash", "-lc", "echo hello-from-tool"]}
       `run_shell_command`  {"command": "echo hello-from-tool", "description": "Run it"}
       otherwise the first function tool, its required properties filled from the schema
       (strings "echo hello-from-tool" for a command-like name, else "hello").
  3. The last user text says "stop at length": "partial answer", finish_reason "length".
  4. `response_format` json_schema / json_object: a JSON object built from the schema.
  5. The last user text says "cut the answer": the answer breaks off, as a dying upstream's
     does: a stream sends the role and the first half of the text, then ends (no finish
     reason, no [DONE]); a plain answer is a 200 whose JSON is cut in the middle.
  6. The last user text says "rate limit me": 429 with Retry-After: 1; "refuse this": 400, an
     error caused by the request (Freeway relays it, no failover).
  7. Otherwise the text "hi there from mock".
Streams send the role, the text in two pieces, tool-call arguments in pieces of 7
characters, a finish chunk, a usage chunk when `stream_options.include_usage`, `[DONE]`.
"""
import json
import os
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MARKER = "hello-from-tool"
COMMAND = "echo " + MARKER
DEFAULT_TEXT = "hi there from mock"

_log_lock = threading.Lock()
LOG_PATH = None


def log_request(entry):
    if not LOG_PATH:
        return
    with _log_lock:
        with open(LOG_PATH, "a") as f:
            f.write(json.dumps(entry) + "\n")


def text_of(content):
    """The text of a message content: a string, or a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for p in content:
            if isinstance(p, str):
                out.append(p)
            elif isinstance(p, dict) and isinstance(p.get("text"), str):
                out.append(p["text"])
        return "\n".join(out)
    return json.dumps(content)


def last_user_text(messages):
    """The last text part of the last user message (agents put reminders before the prompt)."""
    for m in reversed(messages):
        if m.get("role") != "user":
            continue
        c = m.get("content")
        if isinstance(c, list):
            texts = [p.get("text") for p in c if isinstance(p, dict) and isinstance(p.get("text"), str)]
            return texts[-1] if texts else ""
        return text_of(c)
    return ""


def tool_line(output):
    lines = [l.strip() for l in output.splitlines() if l.strip()]
    for l in lines:
        if MARKER in l:
            return l[:200]
    return lines[0][:200] if lines else "(empty)"


def function_tools(body):
    out = []
    for t in body.get("tools") or []:
        if isinstance(t, dict) and t.get("type", "function") == "function":
            f = t.get("function") or {}
            if f.get("name"):
                out.append(f)
    return out


def fill(schema, name=""):
    """A value that fits a JSON schema, good enough for a mock."""
    if not isinstance(schema, dict):
        return {}
    ty = schema.get("type")
    if isinstance(ty, list):
        ty = next((t for t in ty if t != "null"), "string")
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    if ty == "object" or (ty is None and "properties" in schema):
        props = schema.get("properties") or {}
        return {k: fill(props.get(k, {}), k) for k in schema.get("required") or []}
    if ty == "array":
        return [fill(schema.get("items") or {"type": "string"}, name)]
    if ty in ("integer", "number"):
        return 1
    if ty == "boolean":
        return True
    if ty == "string" or ty is None:
        return COMMAND if ("cmd" in name.lower() or "command" in name.lower()) else "hello"
    return None


def tool_call_for(tools):
    names = {f["name"]: f for f in tools}
    if "Bash" in names:
        return "Bash", {"command": COMMAND, "description": "Run it"}
    if "exec_command" in names:
        return "exec_command", {"cmd": COMMAND}
    if "shell" in names:
        return "shell", {"command": ["bash", "-lc", COMMAND]}
    if "run_shell_command" in names:  # the Gemini CLI's
        return "run_shell_command", {"command": COMMAND, "description": "Run it"}
    f = tools[0]
    args = fill(f.get("parameters") or {"type": "object"})
    return f["name"], args if isinstance(args, dict) else {}


def plan(body):
    """(text, tool_call or None, finish_reason) for a request."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    convo = [m for m in messages if m.get("role") not in ("system", "developer")]
    if convo and convo[-1].get("role") == "tool":
        return "done: " + tool_line(text_of(convo[-1].get("content"))), None, "stop"
    user = last_user_text(messages)
    tools = function_tools(body)
    if tools and re.search(r"\brun\b", user, re.IGNORECASE) and body.get("tool_choice") != "none":
        name, args = tool_call_for(tools)
        return "I'll run it.", (name, json.dumps(args)), "tool_calls"
    if "rate limit me" in user.lower():
        return "", None, "rate limit"
    if "refuse this" in user.lower():
        return "", None, "refuse"
    if "cut the answer" in user.lower():
        return DEFAULT_TEXT, None, "cut"
    if "stop at length" in user.lower():
        return "partial answer", None, "length"
    rf = body.get("response_format") or {}
    if rf.get("type") == "json_schema":
        schema = (rf.get("json_schema") or {}).get("schema") or {}
        value = fill(schema)
        return json.dumps(value if value is not None else {}), None, "stop"
    if rf.get("type") == "json_object":
        return json.dumps({"answer": DEFAULT_TEXT}), None, "stop"
    return DEFAULT_TEXT, None, "stop"


# The request fields of OpenAI's chat completions (plus `top_k`, which many compatible servers
# take). Anything else is refused the way OpenAI refuses it, so a translation that leaks a
# field of another dialect fails loudly.
CHAT_FIELDS = {
    "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature",
    "top_p", "top_k", "n", "stop", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
    "top_logprobs", "user", "tools", "tool_choice", "parallel_tool_calls", "response_format", "seed",
    "reasoning_effort", "metadata", "store", "service_tier", "modalities", "prediction", "audio",
    "web_search_options", "prompt_cache_key", "safety_identifier", "verbosity",
}
ROLES = {"system", "developer", "user", "assistant", "tool"}
PART_TYPES = {"text", "image_url", "input_audio", "file", "refusal"}


def invalid(body):
    """Why OpenAI would refuse this chat request (a message naming the field), or None."""
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    extra = sorted(set(body) - CHAT_FIELDS)
    if extra:
        return "Unrecognized request argument supplied: " + ", ".join(extra)
    if not isinstance(body.get("model"), str):
        return "model: a string is required"
    if "stream_options" in body and not body.get("stream"):
        return "stream_options: only allowed when stream is true"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: a non-empty array is required"
    open_calls = set()
    for i, m in enumerate(messages):
        where = "messages[%d]" % i
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            return where + ".role: must be one of " + ", ".join(sorted(ROLES))
        c = m.get("content")
        if isinstance(c, list):
            for j, p in enumerate(c):
                if not isinstance(p, dict) or p.get("type") not in PART_TYPES:
                    return "%s.content[%d]: unknown content part %s" % (where, j, json.dumps(p)[:100])
                if p["type"] == "text" and not isinstance(p.get("text"), str):
                    return "%s.content[%d].text: a string is required" % (where, j)
                if p["type"] == "image_url" and not isinstance((p.get("image_url") or {}).get("url"), str):
                    return "%s.content[%d].image_url.url: a string is required" % (where, j)
                if m["role"] == "tool" and p["type"] != "text":
                    return "%s.content[%d]: a tool message takes text parts only" % (where, j)
        elif not isinstance(c, str) and not (c is None and m["role"] == "assistant" and m.get("tool_calls")):
            return where + ".content: a string or an array of parts is required"
        if m["role"] == "assistant" and "tool_calls" in m:
            calls = m["tool_calls"]
            if not isinstance(calls, list) or not calls:
                return where + ".tool_calls: a non-empty array is required"
            for j, tc in enumerate(calls):
                f = tc.get("function") if isinstance(tc, dict) else None
                if not (isinstance(tc, dict) and isinstance(tc.get("id"), str) and tc.get("type") == "function"
                        and isinstance(f, dict) and isinstance(f.get("name"), str)
                        and isinstance(f.get("arguments"), str)):
                    return "%s.tool_calls[%d]: needs id, type function, function.name, function.arguments (a string)" % (where, j)
                try:
                    json.loads(f["arguments"] or "{}")
                except ValueError:
                    return "%s.tool_calls[%d].function.arguments: not JSON: %r" % (where, j, f["arguments"][:100])
                open_calls.add(tc["id"])
        elif "tool_calls" in m:
            return where + ".tool_calls: only assistant messages have tool_calls"
        if m["role"] == "tool":
            if m.get("tool_call_id") not in open_calls:
                return ("%s: messages with role 'tool' must be a response to a preceding message with "
                        "'tool_calls' (tool_call_id %r)" % (where, m.get("tool_call_id")))
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return "tools: an array is required"
        names = set()
        for j, t in enumerate(tools):
            f = t.get("function") if isinstance(t, dict) else None
            if not (isinstance(t, dict) and t.get("type") == "function" and isinstance(f, dict)
                    and isinstance(f.get("name"), str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", f["name"])):
                return "tools[%d]: needs type function and function.name ([A-Za-z0-9_-], at most 64)" % j
            if "parameters" in f and not isinstance(f["parameters"], dict):
                return "tools[%d].function.parameters: an object is required" % j
            if f["name"] in names:
                return "tools[%d].function.name: %r is given twice" % (j, f["name"])
            names.add(f["name"])
    return None


def usage_for(body, text, call):
    prompt = max(1, len(json.dumps(body.get("messages") or [])) // 4)
    completion = max(1, (len(text) + (len(call[1]) if call else 0)) // 4)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _json(self, status, obj, headers=None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self):
        self._json(404, {"error": {"message": "mock: no route %s %s" % (self.command, self.path),
                                   "type": "invalid_request_error", "code": "not_found"}})

    def do_GET(self):
        log_request({"t": time.time(), "method": "GET", "path": self.path,
                     "headers": dict(self.headers.items()), "body": None})
        if self.path.split("?")[0].rstrip("/") == "/v1/models":
            return self._json(200, {"object": "list", "data": [
                {"id": "mock-model", "object": "model", "created": 0, "owned_by": "mock"}]})
        self._not_found()

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        log_request({"t": time.time(), "method": "POST", "path": self.path,
                     "headers": dict(self.headers.items()),
                     "body": body if body is not None else raw.decode("utf-8", "replace")[:4000]})
        if self.path.split("?")[0].rstrip("/") == "/v1/embeddings":
            return self.embeddings(body or {})
        if self.path.split("?")[0].rstrip("/") != "/v1/chat/completions":
            return self._not_found()
        why = invalid(body)
        if why:
            sys.stderr.write("mock_upstream: refused a request: %s\n" % why)
            return self._json(400, {"error": {"message": "mock upstream: " + why,
                                              "type": "invalid_request_error", "param": None, "code": None}})
        text, call, finish = plan(body)
        if finish == "rate limit":
            return self._json(429, {"error": {"message": "mock upstream: Rate limit reached for requests",
                                              "type": "requests", "param": None, "code": "rate_limit_exceeded"}},
                              {"Retry-After": "1"})
        if finish == "refuse":
            return self._json(400, {"error": {"message": "mock upstream: this request is refused on purpose",
                                              "type": "invalid_request_error", "param": None, "code": None}})
        model = body.get("model") or "mock-model"
        usage = usage_for(body, text, call)
        cid = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        call_id = "call_" + uuid.uuid4().hex[:24]
        if not body.get("stream"):
            if finish == "cut":
                data = json.dumps({"id": cid, "object": "chat.completion", "created": created, "model": model,
                                   "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})
                data = data[: len(data) // 2].encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            message = {"role": "assistant", "content": text}
            if call:
                message["tool_calls"] = [{"id": call_id, "type": "function",
                                          "function": {"name": call[0], "arguments": call[1]}}]
            return self._json(200, {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                "usage": usage})
        self.stream(body, cid, created, model, text, call, call_id, finish, usage)

    def embeddings(self, body):
        # A vector that tells its text apart: [length, number of spaces, 0.25, ...] shortened to
        # `dimensions` when asked.
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        size = int(body.get("dimensions") or 8)
        data = []
        for i, text in enumerate(inputs or []):
            text = text if isinstance(text, str) else " ".join(map(str, text))
            vector = ([float(len(text)), float(text.count(" "))] + [0.25] * 8)[:size]
            data.append({"object": "embedding", "index": i, "embedding": vector})
        tokens = sum(len(str(t).split()) for t in inputs or [])
        return self._json(200, {"object": "list", "data": data, "model": body.get("model"),
                                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    def stream(self, body, cid, created, model, text, call, call_id, finish, usage):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def send(obj):
            payload = b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
            self.wfile.flush()

        def chunk(delta, finish_reason=None):
            c = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}
            if include_usage:
                c["usage"] = None
            return c

        send(chunk({"role": "assistant", "content": ""}))
        half = len(text) // 2
        if finish == "cut":
            send(chunk({"content": text[:half]}))
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            self.close_connection = True
            return
        for piece in (text[:half], text[half:]):
            if piece:
                send(chunk({"content": piece}))
        if call:
            name, args = call
            send(chunk({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                                        "function": {"name": name, "arguments": ""}}]}))
            for i in range(0, len(args), 7):
                send(chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[i:i + 7]}}]}))
        send(chunk({}, finish))
        if include_usage:
            send({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                  "choices": [], "usage": usage})
        send(b"[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def main():
    global LOG_PATH
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    LOG_PATH = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("MOCK_LOG")
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("listening on 127.0.0.1:%d" % server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
