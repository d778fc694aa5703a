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

async function submitForm(form) {
  const data = formObject(form);
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
