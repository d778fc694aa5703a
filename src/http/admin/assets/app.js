// Freeway's admin pages: the little script they need. Forms and buttons call the JSON API
// (/admin/api) with the session's CSRF token; nothing here builds HTML from server data.
"use strict";

function csrf() {
  const m = document.querySelector('meta[name="csrf-token"]');
  return m ? m.content : "";
}

function notice(text, kind) {
  const box = document.getElementById("notice");
  if (!box) return;
  box.textContent = text;
  box.className = kind ? "notice " + kind : "notice";
  box.hidden = !text;
  if (text) box.focus();
}

async function api(method, url, body) {
  const options = {
    method: method,
    credentials: "same-origin",
    headers: { "X-CSRF-Token": csrf() },
  };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const resp = await fetch(url, options);
  let data = null;
  const text = await resp.text();
  if (text) {
    try { data = JSON.parse(text); } catch (_) { data = null; }
  }
  if (!resp.ok) {
    const msg = data && data.error && data.error.message ? data.error.message : "request failed (" + resp.status + ")";
    throw new Error(msg);
  }
  return data;
}

function formObject(form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name || el.disabled) continue;
    if (el.type === "checkbox") out[el.name] = el.checked;
    else if (el.value !== "" || el.required) out[el.name] = el.value;
  }
  return out;
}

function showKey(name, key) {
  const box = document.getElementById("new-key");
  const value = document.getElementById("new-key-value");
  const label = document.getElementById("new-key-name");
  if (!box || !value) return;
  value.textContent = key;
  if (label) label.textContent = name;
  box.hidden = false;
  value.focus();
}

function showImport(result) {
  const box = document.getElementById("import-result");
  if (!box) return;
  box.replaceChildren();
  const summary = document.createElement("p");
  summary.textContent = "Added " + result.added.length + " key(s); skipped " + result.skipped.length + ".";
  box.appendChild(summary);
  if (result.skipped.length) {
    const list = document.createElement("ul");
    for (const s of result.skipped) {
      const li = document.createElement("li");
      li.textContent = "line " + s.line + ": " + s.reason;
      list.appendChild(li);
    }
    box.appendChild(list);
  }
  box.hidden = false;
}

// A client key's limits form: every field sent, an empty one as null (no limit).
function limitsObject(form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name) continue;
    const v = el.value.trim();
    if (el.name === "models") out.models = v ? v.split(",").map((s) => s.trim()).filter(Boolean) : null;
    else if (el.name === "expires") out.expires = v || null;
    else out[el.name] = v === "" ? null : Number(v);
  }
  return out;
}

async function submitForm(form) {
  const data = form.dataset.kind === "limits" ? limitsObject(form) : formObject(form);
  if ("confirm" in data) {
    if (data.confirm !== data.password) {
      notice("The two passwords differ.", "error");
      return;
    }
    delete data.confirm;
  }
  const then = form.dataset.then || "reload";
  const button = form.querySelector("button[type=submit], button:not([type])");
  if (button) button.disabled = true;
  try {
    const result = await api(form.dataset.method || "POST", form.dataset.api, data);
    if (then === "show-key") {
      form.reset();
      showKey(result.name, result.key);
      notice("Client key \u201c" + result.name + "\u201d created. Copy it now: it is shown only once.", "ok");
    } else if (then === "import") {
      showImport(result);
      if (result.added.length) setTimeout(() => location.reload(), 1500);
    } else if (then.startsWith("go:")) {
      location.assign(then.slice(3));
    } else {
      location.reload();
    }
  } catch (e) {
    notice(e.message, "error");
  } finally {
    if (button) button.disabled = false;
  }
}

function chainOrder() {
  return Array.from(document.querySelectorAll("tr[data-model]")).map((tr) => tr.dataset.model);
}

async function act(button) {
  const d = button.dataset;
  if (d.confirm && !window.confirm(d.confirm)) return;
  button.disabled = true;
  try {
    switch (d.act) {
      case "logout":
        await api("POST", "/admin/api/logout");
        location.assign("/admin/login");
        return;
      case "new-chat":
        newChat();
        return;
      case "copy": {
        const text = document.getElementById(d.target).textContent;
        try {
          await navigator.clipboard.writeText(text);
          notice("Copied.", "ok");
        } catch (_) {
          const range = document.createRange();
          range.selectNodeContents(document.getElementById(d.target));
          const sel = window.getSelection();
          sel.removeAllRanges();
          sel.addRange(range);
          notice("Selected: press Ctrl+C (\u2318C) to copy.", "ok");
        }
        return;
      }
      case "move": {
        const order = chainOrder();
        const at = order.indexOf(d.model);
        const to = d.dir === "up" ? at - 1 : at + 1;
        if (at < 0 || to < 0 || to >= order.length) return;
        order.splice(at, 1);
        order.splice(to, 0, d.model);
        await api("PUT", "/admin/api/chain", { order: order });
        sessionStorage.setItem("focus", d.model + ":" + d.dir);
        break;
      }
      case "switch":
        await api("PATCH", "/admin/api/chain", { model: d.model, enabled: d.enabled === "true" });
        sessionStorage.setItem("focus", d.model + ":switch");
        break;
      default:
        await api(d.method || "POST", d.url, d.body ? JSON.parse(d.body) : undefined);
    }
    location.reload();
  } catch (e) {
    notice(e.message, "error");
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("submit", (ev) => {
  const form = ev.target;
  if (form instanceof HTMLFormElement && form.dataset.api) {
    ev.preventDefault();
    submitForm(form);
  }
});

document.addEventListener("click", (ev) => {
  const button = ev.target.closest("button[data-act]");
  if (button) {
    ev.preventDefault();
    act(button);
  }
});

// After a reorder or a switch, keep the keyboard where it was.
document.addEventListener("DOMContentLoaded", () => {
  const focus = sessionStorage.getItem("focus");
  if (!focus) return;
  sessionStorage.removeItem("focus");
  const [model, what] = [focus.slice(0, focus.lastIndexOf(":")), focus.slice(focus.lastIndexOf(":") + 1)];
  const row = Array.from(document.querySelectorAll("tr[data-model]")).find((tr) => tr.dataset.model === model);
  if (!row) return;
  const target = what === "switch" ? row.querySelector('[data-act="switch"]') : row.querySelector('[data-dir="' + what + '"]');
  if (target) target.focus();
});

// ---- Playground: a chat streamed through the router ----

const chat = { messages: [] };

function bubble(role, text) {
  const box = document.getElementById("chat");
  const div = document.createElement("div");
  div.className = "msg " + role;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : role === "error" ? "Error" : "Assistant";
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  div.append(who, body);
  box.appendChild(div);
  return { div: div, who: who, body: body };
}

function showTrail(attempts) {
  const trail = document.getElementById("trail");
  trail.replaceChildren();
  if (!attempts || attempts.length < 2) { trail.hidden = true; return; }
  for (const a of attempts) {
    const li = document.createElement("li");
    li.textContent = a.provider + "/" + a.model + " · " + a.outcome + (a.status ? " " + a.status : "") +
      " · " + a.duration_ms + " ms" + (a.error ? " · " + a.error : "");
    trail.appendChild(li);
  }
  trail.hidden = false;
}

async function fetchTrail(requestId) {
  // The request log is written a moment after the answer ends.
  for (let i = 0; i < 20; i++) {
    await new Promise((r) => setTimeout(r, 150));
    try {
      const data = await api("GET", "/admin/api/requests?limit=20");
      const row = data.requests.find((r) => r.id === requestId);
      if (row) { showTrail(row.attempts); return; }
    } catch (_) { return; }
  }
}

async function sendChat(form) {
  const f = formObject(form);
  const text = (f.message || "").trim();
  if (!text) return;
  const messages = [];
  if (f.system && f.system.trim()) messages.push({ role: "system", content: f.system.trim() });
  chat.messages.push({ role: "user", content: text });
  messages.push(...chat.messages);
  bubble("user", text);
  form.elements.message.value = "";
  const meta = document.getElementById("meta");
  meta.textContent = "Waiting for the first token…";
  document.getElementById("trail").hidden = true;
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  const started = performance.now();
  let firstToken = null;
  let answer = "";
  const out = bubble("assistant", "");
  try {
    const body = { model: f.model, messages: messages, stream: true };
    const temperature = parseFloat(f.temperature);
    if (!Number.isNaN(temperature)) body.temperature = temperature;
    const resp = await fetch("/admin/api/playground", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(body),
    });
    const via = resp.headers.get("x-routed-via");
    const attempts = resp.headers.get("x-fallback-attempts");
    const requestId = resp.headers.get("x-request-id");
    if (!resp.ok) {
      const err = await resp.json().catch(() => null);
      throw new Error(err && err.error ? err.error.message : "request failed (" + resp.status + ")");
    }
    if (via) out.who.textContent = via;
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let failure = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          let chunk;
          try { chunk = JSON.parse(data); } catch (_) { continue; }
          if (chunk.error) { failure = chunk.error.message; continue; }
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          const piece = delta && (delta.content || "");
          if (piece) {
            if (firstToken === null) firstToken = performance.now() - started;
            answer += piece;
            out.body.textContent = answer;
          }
        }
      }
    }
    const total = performance.now() - started;
    chat.messages.push({ role: "assistant", content: answer });
    meta.textContent = "Served by " + (via || "?") + " · first token " +
      (firstToken === null ? "–" : Math.round(firstToken) + " ms") + " · total " + Math.round(total) + " ms" +
      " · fallback attempts " + (attempts || "0");
    meta.dataset.routedVia = via || "";
    if (failure) bubble("error", failure);
    if (requestId && attempts && attempts !== "0") fetchTrail(requestId);
  } catch (e) {
    out.div.remove();
    chat.messages.pop();
    bubble("error", e.message);
    meta.textContent = "";
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("submit", (ev) => {
  if (ev.target.id === "playground") {
    ev.preventDefault();
    sendChat(ev.target);
  }
});

function newChat() {
  chat.messages = [];
  document.getElementById("chat").replaceChildren();
  document.getElementById("meta").textContent = "";
  document.getElementById("trail").hidden = true;
}

// Enter sends, Shift+Enter starts a new line.
document.addEventListener("keydown", (ev) => {
  const t = ev.target;
  if (t.name === "message" && t.form && t.form.id === "playground" && ev.key === "Enter" && !ev.shiftKey) {
    ev.preventDefault();
    t.form.requestSubmit();
  }
});
