// accessgw installer UI: devices and MQTT set-up. Each change is applied as a whole or not
// at all; a refused one lists its problems (key path, line, what is allowed).
"use strict";
(function () {
  const csrf = (document.querySelector('meta[name="csrf"]') || {}).content || "";
  const $ = (sel, root) => (root || document).querySelector(sel);
  const T = window.accessgwT;  // the page's words in the site's language (app.js)
  const result = $("#setup-result");
  const problemsList = $("#setup-problems");

  async function send(method, url, body) {
    const r = await fetch(url, {
      method, credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": csrf },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await r.json(); } catch (e) { data = { message: r.statusText }; }
    if (r.status === 401) location.href = "/login";
    return { ok: r.ok, status: r.status, data };
  }

  function text(data) {
    if (!data) return T("js.failed");
    if (typeof data.message === "string") return data.message;
    if (typeof data.detail === "string") return data.detail;
    if (Array.isArray(data.detail)) return data.detail.map(d => (d.loc || []).join(".") + ": " + d.msg).join("; ");
    return JSON.stringify(data);
  }

  function show(r, reload) {
    problemsList.replaceChildren();
    result.className = "result " + (r.ok ? "ok" : "error");
    result.textContent = text(r.data);
    ((r.data && r.data.problems) || []).forEach(p => {
      const li = document.createElement("li");
      const key = document.createElement("code");
      key.textContent = p.key;
      li.appendChild(key);
      li.appendChild(document.createTextNode((p.line ? " (" + T("js.line", { line: p.line }) + ")" : "") + ": " + p.message));
      problemsList.appendChild(li);
    });
    if (r.ok && reload) setTimeout(() => location.reload(), 700);
  }

  function entryOf(form) {
    const entry = {};
    Array.from(form.elements).forEach(input => {
      if (!input.name || input.value === "" || input.disabled) return;
      const value = input.type === "number" ? Number(input.value) : input.value;
      const parts = input.name.split(".");
      if (parts.length === 2) {
        entry[parts[0]] = entry[parts[0]] || {};
        entry[parts[0]][parts[1]] = value;
      } else entry[input.name] = value;
    });
    Object.keys(entry).forEach(k => {  // a point needs its board: no board, no point
      if (typeof entry[k] === "object" && !entry[k].board) delete entry[k];
    });
    return entry;
  }

  document.querySelectorAll("form[data-setup]").forEach(form => {
    form.addEventListener("submit", async ev => {
      ev.preventDefault();
      const entry = entryOf(form);
      result.className = "result";
      result.textContent = T("js.applying");
      show(await send("PUT", "/api/config/" + form.dataset.setup + "/" + encodeURIComponent(entry.id), entry), true);
    });
  });
  document.querySelectorAll("[data-remove]").forEach(b => b.addEventListener("click", async () => {
    if (!confirm(T("js.remove", { what: b.dataset.remove }))) return;
    show(await send("DELETE", "/api/config/" + b.dataset.remove), true);
  }));
  const rollback = $("#rollback");
  if (rollback) rollback.addEventListener("click", async () => show(await send("POST", "/api/config/rollback", {}), true));
  document.querySelectorAll("[data-rollback]").forEach(b => b.addEventListener("click", async () => {
    show(await send("POST", "/api/config/rollback", { version: Number(b.dataset.rollback) }), true);
  }));

  const backup = $("#backup-form");
  if (backup) backup.addEventListener("submit", async ev => {
    ev.preventDefault();
    result.className = "result";
    result.textContent = T("js.backing_up");
    const r = await fetch("/api/backup", {
      method: "POST", credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": csrf },
      body: JSON.stringify({ passphrase: backup.elements.passphrase.value }),
    });
    if (!r.ok) { show({ ok: false, data: await r.json().catch(() => ({ message: r.statusText })) }, false); return; }
    const name = (r.headers.get("content-disposition") || "").split('filename="')[1] || "accessgw.agwbak";
    const a = document.createElement("a");
    a.href = URL.createObjectURL(await r.blob());
    a.download = name.replace(/"$/, "");
    a.click();
    result.className = "result ok";
    result.textContent = T("js.backup_done");
  });

  // --- MQTT ------------------------------------------------------------------------------
  const mqtt = $("#mqtt-form");
  if (!mqtt) return;
  function settings() {
    const s = {};
    Array.from(mqtt.elements).forEach(input => {
      if (!input.name) return;
      if (input.type === "checkbox") s[input.name] = input.checked;
      else if (input.type === "number") s[input.name] = Number(input.value);
      else s[input.name] = input.value;
    });
    return s;
  }
  mqtt.querySelectorAll("input[type=file][data-upload]").forEach(input => input.addEventListener("change", () => {
    const file = input.files[0];
    if (!file) return;
    const reader = new FileReader();
    reader.onload = async () => {
      const data = String(reader.result).split(",", 2)[1] || "";
      const r = await send("POST", "/api/config/upload/" + input.dataset.upload, { data });
      show(r, false);
      if (r.ok) mqtt.elements[input.dataset.upload].value = r.data.path;
    };
    reader.readAsDataURL(file);
  }));
  $("#mqtt-test").addEventListener("click", async () => {
    const out = $("#mqtt-test-result");
    out.className = "result";
    out.textContent = T("js.connecting");
    const r = await send("POST", "/api/mqtt/test", settings());
    out.className = "result " + (r.ok && r.data.ok ? "ok" : "error");
    out.textContent = r.ok ? (r.data.ok ? "" : "[" + r.data.stage + "] ") + r.data.message : text(r.data);
  });
  mqtt.addEventListener("submit", async ev => {
    ev.preventDefault();
    show(await send("PUT", "/api/config/mqtt", settings()), false);
  });
})();
