// accessgw installer UI: live dashboard (server-sent events), stale banner, tool forms.
"use strict";
(function () {
  const csrf = (document.querySelector('meta[name="csrf"]') || {}).content || "";
  const $ = (sel, root) => (root || document).querySelector(sel);
  // the page's words in the site's language (gateway/web/i18n.py): T("js.working"),
  // T("js.no_news", { seconds: 9 }); a code of a family: say("decision", "granted")
  const words = JSON.parse(($("#ui-words") || {}).textContent || "{}");
  const T = (key, values) => (words[key] || key).replace(/\{(\w+)\}/g, (m, k) => (values && k in values ? String(values[k]) : m));
  const say = (family, code) => words[family + "." + code] || String(code).replace(/_/g, " ");
  const lang = document.documentElement.lang || "en";
  window.accessgwT = T;  // setup.js speaks with the same words

  async function post(url, body) {
    const r = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": csrf },
      body: JSON.stringify(body || {}),
    });
    let data = null;
    try { data = await r.json(); } catch (e) { data = { detail: r.statusText }; }
    if (r.status === 401) { location.href = "/login"; }
    return { ok: r.ok, status: r.status, data };
  }

  const logout = $("#logout");
  if (logout) logout.addEventListener("click", async () => {
    await fetch("/logout", { method: "POST", headers: { "x-csrf-token": csrf } });
    location.href = "/login";
  });

  function detail(data) {
    if (!data) return T("js.failed");
    if (typeof data.detail === "string") return data.detail;
    if (Array.isArray(data.detail)) return data.detail.map(d => (d.loc || []).slice(-1)[0] + ": " + d.msg).join("; ");
    return data.message || JSON.stringify(data);
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  function showDecision(out, d) {
    out.replaceChildren(el("b", d.decision, say("decision", d.decision)), document.createTextNode(" " + (d.message || "") + " (" + d.reason + ")"));
    if (d.trace && d.trace.length) {
      const ol = el("ol", "trace");
      d.trace.forEach(t => ol.appendChild(el("li", null, t)));
      out.appendChild(ol);
    }
  }

  function showCard(out, d, kind) {
    if (!d.seen) { out.textContent = d.message; return; }
    out.replaceChildren(el("div", "value", d.value), el("div", "muted", say("credkind", d.kind) + " · " + d.format + " · " + T("js.card_reader", { reader: d.reader })));
    const who = el("div", null, d.member ? T("js.belongs_to", { member: d.member }) : T("js.not_member"));
    out.appendChild(who);
    if (kind === "why-card" && d.member) location.href = "/why?member=" + encodeURIComponent(d.member);
  }

  document.querySelectorAll("form[data-api]").forEach(form => {
    form.addEventListener("submit", async ev => {
      ev.preventDefault();
      const out = $("output.result", form);
      const body = {};
      new FormData(form).forEach((v, k) => {
        const input = form.elements[k];
        body[k] = input && input.type === "number" ? Number(v) : v;
      });
      if (ev.submitter && ev.submitter.name) body[ev.submitter.name] = ev.submitter.value;
      const buttons = form.querySelectorAll("button");
      buttons.forEach(b => { b.disabled = true; });
      const kind = form.dataset.kind;
      out.className = "result";
      out.textContent = kind === "next-card" || kind === "why-card" ? T("js.present_card") : T("js.working");
      try {
        const r = await post(form.dataset.api, body);
        if (!r.ok) { out.className = "result error"; out.textContent = detail(r.data); return; }
        if (kind === "decision") showDecision(out, r.data);
        else if (kind === "next-card" || kind === "why-card") showCard(out, r.data, kind);
        else { out.className = "result ok"; out.textContent = r.data.message; }
      } catch (e) {
        out.className = "result error"; out.textContent = T("js.no_answer", { error: e });
      } finally {
        buttons.forEach(b => { b.disabled = false; });
      }
    });
  });

  // --- live view: status and rows over server-sent events ---------------------------------
  const dash = $("#dash");
  const rowsList = $('[data-live="rows"]');
  if (!dash && !rowsList) return;
  const stale = $("#stale");
  const staleWhy = $("#stale-why");
  let lastMessage = Date.now();
  let lastStatus = "";

  function setStale(on, why) {
    if (!stale) return;
    stale.hidden = !on;
    if (on && staleWhy) staleWhy.textContent = why || "";
    document.body.classList.toggle("is-stale", on);
  }

  function rowItem(r) {
    const li = el("li", "row fresh row-" + (r.decision || r.kind));
    li.appendChild(el("span", "when", r.local));
    li.appendChild(el("span", "door", r.door || "—"));
    const what = el("span", "what");
    if (r.decision) { what.appendChild(el("b", r.decision, say("decision", r.decision))); what.appendChild(document.createTextNode(" ")); }
    what.appendChild(document.createTextNode(r.text));
    li.appendChild(what);
    if (r.member) {
      const who = el("span", "who", (r.display || "") + " ");
      const a = el("a", null, r.member);
      a.href = "/why?member=" + encodeURIComponent(r.member);
      who.appendChild(a);
      li.appendChild(who);
    }
    if (r.latency_ms !== null && r.latency_ms !== undefined) {
      const ms = Number(r.latency_ms).toLocaleString(lang, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
      const took = el("span", "latency", ms + " ms");
      took.title = T("js.took");
      li.appendChild(took);
    }
    if (r.warnings && r.warnings.length) li.appendChild(el("span", "warn", r.warnings.join(", ")));
    return li;
  }

  async function refreshDash() {
    const r = await fetch("/partials/dashboard", { credentials: "same-origin" });
    if (r.ok) dash.innerHTML = await r.text();  // server-rendered, autoescaped HTML
  }

  function connect() {
    const es = new EventSource("/api/stream");
    es.addEventListener("status", ev => {
      lastMessage = Date.now();
      const s = JSON.parse(ev.data);
      setStale(!!s.stale, s.stale_reason);
      if (dash && !s.stale) {
        const key = JSON.stringify([s.doors, s.boards, s.readers, s.link, s.entitlements, s.journal, s.clock]);
        if (key !== lastStatus) { lastStatus = key; refreshDash(); }
      }
    });
    es.addEventListener("rows", ev => {
      lastMessage = Date.now();
      if (!rowsList) return;
      const empty = $(".empty", rowsList);
      if (empty) empty.remove();
      JSON.parse(ev.data).forEach(r => rowsList.insertBefore(rowItem(r), rowsList.firstChild));
      while (rowsList.children.length > 200) rowsList.removeChild(rowsList.lastChild);
    });
    es.onerror = () => {
      setStale(true, T("js.lost"));
    };
    es.onopen = () => { lastMessage = Date.now(); };
  }
  connect();
  setInterval(() => {
    if (Date.now() - lastMessage > 8000) setStale(true, T("js.no_news", { seconds: Math.round((Date.now() - lastMessage) / 1000) }));
  }, 1000);
})();
