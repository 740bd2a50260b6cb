// accessgw installer UI: restore a backup. The file is checked by the gateway first (nothing
// changes); the confirmation page shows what it brings; confirming restarts the gateway,
// and the page waits for it to come back (its states are sections of the page).
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
  async function reason(r) {
    if (r.status === 401) location.href = "/login";
    try {
      const data = await r.json();
      return data.message || data.detail || r.statusText;
    } catch (e) { return r.statusText; }
  }

  const form = $("#restore-form");
  if (form) form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const file = form.elements.file.files[0];
    if (!file) return;
    const button = form.querySelector("button");
    say(true, T("js.restore_checking"));
    button.disabled = true;
    try {
      const r = await fetch("/api/restore", {
        method: "POST", credentials: "same-origin", body: file,
        headers: { "content-type": "application/octet-stream", "x-csrf-token": csrf,
                   "x-backup-passphrase": encodeURIComponent(form.elements.passphrase.value) },
      });
      if (r.ok) {
        location.href = "/restore/" + (await r.json()).plan.token;
        return;
      }
      say(false, T("js.restore_refused", { reason: await reason(r) }));
    } catch (e) {
      say(false, T("js.restore_upload_failed", { error: e }));
    } finally {
      button.disabled = false;
    }
  });

  const plan = $("#restore-plan");
  if (!plan) return;
  const token = plan.dataset.token;
  const show = id => ["#restore-ask", "#restore-waiting", "#restore-done", "#restore-late"]
    .forEach(s => { $(s).hidden = s !== id; });
  $("#restore-cancel").addEventListener("click", async () => {
    await fetch("/api/restore/" + token, { method: "DELETE", credentials: "same-origin",
                                           headers: { "x-csrf-token": csrf } });
    location.href = "/devices";
  });
  $("#restore-confirm").addEventListener("click", async () => {
    $("#restore-confirm").disabled = true;
    const r = await fetch("/api/restore/" + token + "/confirm", {
      method: "POST", credentials: "same-origin", headers: { "x-csrf-token": csrf } });
    if (!r.ok) {
      $("#restore-confirm").disabled = false;
      say(false, T("js.restore_refused", { reason: await reason(r) }));
      return;
    }
    show("#restore-waiting");
    // back = the sign-in page answers again after the UI went away (or after 30 s)
    let down = false;
    const started = Date.now();
    const poll = async () => {
      try {
        const back = await fetch("/login", { cache: "no-store", credentials: "omit" });
        if (back.ok && (down || Date.now() - started > 30000)) { show("#restore-done"); return; }
      } catch (e) { down = true; }
      if (Date.now() - started > 120000) { show("#restore-late"); return; }
      setTimeout(poll, 700);
    };
    setTimeout(poll, 1000);
  });
})();
