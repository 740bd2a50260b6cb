// accessgw installer UI: restore a backup. The file is checked by the gateway first (nothing
// changes); the confirmation page shows what it brings; confirming restarts the gateway.
"use strict";
(function () {
  const csrf = (document.querySelector('meta[name="csrf"]') || {}).content || "";
  const $ = sel => document.querySelector(sel);
  const result = $("#restore-result");
  const T = window.accessgwT;  // the page's words in the site's language (app.js)

  function say(ok, message) {
    result.className = "result " + (ok ? "ok" : "error");
    result.textContent = message;
  }
  async function answer(r) {
    let data = null;
    try { data = await r.json(); } catch (e) { data = { message: r.statusText }; }
    if (r.status === 401) location.href = "/login";
    return data ? (data.message || data.detail || r.statusText) : r.statusText;
  }

  const form = $("#restore-form");
  if (form) form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const file = form.elements.file.files[0];
    if (!file) return;
    say(true, T("js.restore_checking"));
    form.querySelector("button").disabled = true;
    try {
      const r = await fetch("/api/restore", {
        method: "POST", credentials: "same-origin", body: file,
        headers: { "content-type": "application/octet-stream", "x-csrf-token": csrf,
                   "x-backup-passphrase": encodeURIComponent(form.elements.passphrase.value) },
      });
      if (r.ok) {
        const data = await r.json();
        location.href = "/restore/" + data.plan.token;
        return;
      }
      say(false, T("js.restore_refused", { reason: await answer(r) }));
    } catch (e) {
      say(false, T("js.restore_upload_failed", { error: e }));
    } finally {
      form.querySelector("button").disabled = false;
    }
  });

  const plan = $("#restore-plan");
  if (!plan) return;
  const token = plan.dataset.token, gateway = plan.dataset.gateway;
  $("#restore-cancel").addEventListener("click", async () => {
    await fetch("/api/restore/" + token, { method: "DELETE", credentials: "same-origin",
                                           headers: { "x-csrf-token": csrf } });
    location.href = "/devices";
  });
  $("#restore-confirm").addEventListener("click", async () => {
    $("#restore-confirm").disabled = true;
    $("#restore-cancel").disabled = true;
    const r = await fetch("/api/restore/" + token + "/confirm", {
      method: "POST", credentials: "same-origin", headers: { "x-csrf-token": csrf } });
    if (!r.ok) { say(false, T("js.restore_refused", { reason: await answer(r) })); return; }
    say(true, T("js.restoring", { gateway }));
    let down = false;
    const started = Date.now();
    const poll = async () => {
      try {
        const back = await fetch("/login", { cache: "no-store", credentials: "omit" });
        if (back.ok && (down || Date.now() - started > 30000)) {
          result.className = "result ok";
          result.replaceChildren(document.createTextNode(
            T("js.restore_back", { gateway })));
          const a = document.createElement("a");
          a.href = "/login"; a.id = "restore-sign-in"; a.textContent = T("js.sign_in");
          result.appendChild(a);
          return;
        }
      } catch (e) { down = true; }
      if (!gaveUp()) setTimeout(poll, 700);
    };
    const gaveUp = () => {
      if (Date.now() - started < 120000) return false;
      say(false, T("js.restore_gave_up"));
      return true;
    };
    setTimeout(poll, 1000);
  });
})();
