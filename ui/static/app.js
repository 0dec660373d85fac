// Engine Room operator UI. Pages are rendered on the server; this script
// adds live updates and sends every change through the same JSON API as any
// other client (/api/*), with the CSRF header the API requires of browsers.
"use strict";

const BASE = "/verifier-engine-room";
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

// ------------------------------------------------------------------ API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Call the JSON API; throws an ApiError carrying the API's own message. */
async function api(method, path, body) {
  const init = {
    method,
    credentials: "same-origin",
    headers: { "x-engine-csrf": "1", accept: "application/json" },
  };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "network", "the node did not answer (" + e.message + ")");
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = null;
  }
  if (!res.ok) {
    const err = data && data.error;
    throw new ApiError(res.status, err ? err.code : "http_" + res.status, err ? err.message : text || res.statusText);
  }
  return data;
}

function describe(err) {
  if (err instanceof ApiError) {
    return err.message + (err.code && err.code !== "network" ? " (" + err.code + ", HTTP " + err.status + ")" : "");
  }
  return String(err && err.message ? err.message : err);
}

// ------------------------------------------------------------------ feedback

function toast(message, kind) {
  const el = document.createElement("div");
  el.className = "toast" + (kind === "error" ? " error" : "");
  el.textContent = message;
  $("#toasts").appendChild(el);
  setTimeout(() => el.remove(), kind === "error" ? 8000 : 4000);
}

function banner(message, ok) {
  const el = $("#banner");
  if (!message) {
    el.hidden = true;
    return;
  }
  el.textContent = message;
  el.className = "banner" + (ok ? " ok" : "");
  el.hidden = false;
}

/** A message to show after the next page load (for actions that reload). */
function flashAfterReload(message) {
  sessionStorage.setItem("engine-room.flash", message);
  location.reload();
}

function showFlash() {
  const m = sessionStorage.getItem("engine-room.flash");
  if (m) {
    sessionStorage.removeItem("engine-room.flash");
    toast(m);
  }
}

/**
 * Ask for confirmation (and optionally a reason), then run `action(reason)`.
 * The dialog stays open with the API's error if the action fails.
 */
function confirmThen({ title, text, withReason, okLabel, danger }, action) {
  const dlg = $("#confirm");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  $("#confirm-reason-wrap").hidden = !withReason;
  $("#confirm-reason").value = "";
  const err = $("#confirm-error");
  err.hidden = true;
  const ok = $("#confirm-ok");
  ok.textContent = okLabel || "Confirm";
  ok.className = "btn " + (danger ? "danger" : "primary");
  ok.disabled = false;
  const form = $("#confirm-form");
  form.onsubmit = async (ev) => {
    ev.preventDefault();
    ok.disabled = true;
    try {
      await action($("#confirm-reason").value.trim());
      dlg.close();
    } catch (e) {
      err.textContent = describe(e);
      err.hidden = false;
    } finally {
      ok.disabled = false;
    }
  };
  $("#confirm-cancel").onclick = () => dlg.close();
  dlg.showModal();
  if (withReason) $("#confirm-reason").focus();
}

// ------------------------------------------------------------------ worker actions

const ACTIONS = {
  pause: { label: "Pause", text: "stops taking new work; in-flight work finishes.", reason: true },
  resume: { label: "Resume", text: "goes back to running.", reason: true },
  drain: { label: "Drain", text: "finishes in-flight work and takes nothing new.", reason: true },
  stop: { label: "Stop", text: "is told to stop.", reason: true, danger: true },
  quarantine: { label: "Quarantine", text: "is excluded from work until unquarantined.", reason: true, danger: true },
  unquarantine: { label: "Unquarantine", text: "may take work again.", reason: true },
};

/** Wire the per-worker action buttons inside `root`; `after(worker)` runs on success. */
function wireWorkerActions(root, after) {
  root.addEventListener("click", (ev) => {
    const btn = ev.target.closest("button[data-action]");
    if (!btn) return;
    const id = btn.dataset.worker;
    const a = ACTIONS[btn.dataset.action];
    if (!a) return;
    confirmThen(
      { title: a.label + " " + id + "?", text: "Worker " + id + " " + a.text, withReason: a.reason, okLabel: a.label, danger: a.danger },
      async (reason) => {
        const w = await api("POST", "/api/workers/" + encodeURIComponent(id) + "/" + btn.dataset.action, reason ? { reason } : {});
        toast(a.label + ": " + id + " is now " + w.desired_state + (w.quarantined ? ", quarantined" : ""));
        await after(w);
      },
    );
  });
}

// ------------------------------------------------------------------ workers page

function initWorkers() {
  const form = $("#worker-filters");
  const results = $("#worker-results");
  let current = location.search.replace(/^\?/, "");
  let loading = null;

  function queryFromForm(offset) {
    const p = new URLSearchParams();
    for (const [k, v] of new FormData(form).entries()) {
      if (v !== "") p.set(k, v);
    }
    if (offset) p.set("offset", offset);
    return p.toString();
  }

  async function load(query, opts = {}) {
    if (loading) loading.abort();
    const ctl = new AbortController();
    loading = ctl;
    const sep = query ? "&" : "";
    try {
      const res = await fetch(BASE + "/workers?" + query + sep + "partial=rows", { credentials: "same-origin", signal: ctl.signal });
      if (!res.ok) throw new Error("HTTP " + res.status);
      results.innerHTML = await res.text();
      current = query;
      if (!opts.keepUrl) history.replaceState(null, "", BASE + "/workers" + (query ? "?" + query : ""));
      if (opts.flash) {
        const row = $('tr[data-worker="' + CSS.escape(opts.flash) + '"]', results);
        if (row) row.classList.add("flash");
      }
      banner(null);
    } catch (e) {
      if (e.name !== "AbortError") banner("Could not refresh the table: " + describe(e));
    } finally {
      if (loading === ctl) loading = null;
    }
  }

  let typing = null;
  form.addEventListener("input", (ev) => {
    clearTimeout(typing);
    const delay = ev.target.name === "q" ? 250 : 0;
    typing = setTimeout(() => load(queryFromForm(0)), delay);
  });
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    load(queryFromForm(0));
  });
  results.addEventListener("click", (ev) => {
    const a = ev.target.closest("a[data-page-link]");
    if (!a) return;
    ev.preventDefault();
    load(new URL(a.href).search.replace(/^\?/, ""));
  });
  wireWorkerActions(results, (w) => load(current, { keepUrl: true, flash: w.id }));

  // Keep the table current without a reload, unless the operator is busy.
  const every = Math.max(1, Number(document.body.dataset.poll) || 10) * 1000;
  setInterval(() => {
    if ($("#confirm").open || document.hidden || loading) return;
    if (document.activeElement && document.activeElement.name === "q") return;
    load(current, { keepUrl: true });
  }, every);
}

function initWorkerDetail() {
  const root = $("[data-worker-detail]");
  if (!root) return;
  wireWorkerActions(root, async () => {
    setTimeout(() => location.reload(), 600);
  });
}

// ------------------------------------------------------------------ jobs

const JOB_ACTIONS = {
  cancel: { label: "Cancel job", text: "is cancelled; a worker holding it loses its lease.", reason: true, danger: true },
  requeue: { label: "Requeue", text: "goes back to queued with its attempts reset.", reason: false },
};

/** Per-queue pause and resume: the operator routes of the queue API. */
function queueCall(action, queue) {
  return api("POST", "/api/queue/" + encodeURIComponent(queue) + "/" + action);
}

/** Wire job and queue action buttons inside `root`; `after()` runs on success. */
function wireJobActions(root, after) {
  root.addEventListener("click", (ev) => {
    const jb = ev.target.closest("button[data-job-action]");
    if (jb) {
      const id = jb.dataset.job;
      const a = JOB_ACTIONS[jb.dataset.jobAction];
      if (!a) return;
      confirmThen(
        { title: a.label + " " + id + "?", text: "Job " + id + " " + a.text, withReason: a.reason, okLabel: a.label, danger: a.danger },
        async (reason) => {
          const path = "/api/v1/jobs/" + encodeURIComponent(id) + "/" + jb.dataset.jobAction;
          const j = await api("POST", path, reason ? { reason } : {});
          toast(a.label + ": job " + id + " is now " + ((j && (j.state || (j.job && j.job.state))) || "changed"));
          await after(id);
        },
      );
      return;
    }
    const qb = ev.target.closest("button[data-queue-action]");
    if (qb) {
      const q = qb.dataset.queue;
      const action = qb.dataset.queueAction;
      const label = action === "pause" ? "Pause" : "Resume";
      const text = action === "pause" ? "Workers claim nothing from queue " + q + " until it is resumed; running jobs finish." : "Workers may claim from queue " + q + " again.";
      confirmThen({ title: label + " queue " + q + "?", text, okLabel: label }, async () => {
        await queueCall(action, q);
        toast("Queue " + q + (action === "pause" ? " paused" : " resumed"));
        await after(null);
      });
    }
  });
}

function initJobs() {
  const form = $("#job-filters");
  const results = $("#job-results");
  const live = $("#jobs-live");
  let current = location.search.replace(/^\?/, "");
  let loading = null;

  function queryFromForm() {
    const p = new URLSearchParams();
    for (const [k, v] of new FormData(form).entries()) {
      if (v !== "" && !(k === "limit" && v === "200")) p.set(k, v);
    }
    return p.toString();
  }

  async function load(query, opts = {}) {
    if (loading) loading.abort();
    const ctl = new AbortController();
    loading = ctl;
    const sep = query ? "&" : "";
    try {
      const res = await fetch(BASE + "/jobs?" + query + sep + "partial=rows", { credentials: "same-origin", signal: ctl.signal });
      if (!res.ok) throw new Error("HTTP " + res.status);
      results.innerHTML = await res.text();
      current = query;
      if (!opts.keepUrl) history.replaceState(null, "", BASE + "/jobs" + (query ? "?" + query : ""));
      if (opts.flash) {
        const row = $('tr[data-job="' + CSS.escape(opts.flash) + '"]', results);
        if (row) row.classList.add("flash");
      }
      live.className = "live on";
      live.textContent = "live · every " + (Number(document.body.dataset.poll) || 10) + " s";
      banner(null);
    } catch (e) {
      if (e.name !== "AbortError") {
        live.className = "live off";
        live.textContent = "not refreshing";
        banner("Could not refresh the jobs: " + describe(e));
      }
    } finally {
      if (loading === ctl) loading = null;
    }
  }

  let typing = null;
  form.addEventListener("input", (ev) => {
    clearTimeout(typing);
    const delay = ev.target.type === "search" ? 300 : 0;
    typing = setTimeout(() => load(queryFromForm()), delay);
  });
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    load(queryFromForm());
  });
  results.addEventListener("click", (ev) => {
    const a = ev.target.closest("a[data-page-link]");
    if (!a) return;
    ev.preventDefault();
    load(new URL(a.href).search.replace(/^\?/, ""));
  });
  if (!document.body.dataset.readOnly) wireJobActions(results, (id) => load(current, { keepUrl: true, flash: id }));

  // Keep the cards and the table current, unless the operator is busy.
  const every = Math.max(1, Number(document.body.dataset.poll) || 10) * 1000;
  setInterval(() => {
    if ($("#confirm").open || document.hidden || loading) return;
    if (document.activeElement && document.activeElement.type === "search") return;
    load(current, { keepUrl: true });
  }, every);
  live.className = "live on";
  live.textContent = "live · every " + every / 1000 + " s";
}

function initJobDetail() {
  const root = $("[data-job-detail]");
  if (!root || document.body.dataset.readOnly) return;
  wireJobActions(root, async () => {
    setTimeout(() => location.reload(), 600);
  });
}

// ------------------------------------------------------------------ overview (live)

/** A minimal SVG line chart over a rolling window of samples. */
class LineChart {
  constructor(svg, series, { maxPoints = 150, unit = "" } = {}) {
    this.svg = svg;
    this.series = series; // [{key, color}]
    this.points = [];
    this.maxPoints = maxPoints;
    this.unit = unit;
    this.draw();
  }

  push(sample) {
    this.points.push(sample);
    if (this.points.length > this.maxPoints) this.points.shift();
    this.draw();
  }

  draw() {
    const W = 600, H = 180, L = 44, R = 8, T = 10, B = 22;
    const NS = "http://www.w3.org/2000/svg";
    const svg = this.svg;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const vals = [];
    for (const p of this.points) for (const s of this.series) if (p[s.key] != null) vals.push(p[s.key]);
    const max = niceMax(vals.length ? Math.max(...vals) : 1);
    const el = (name, attrs, text) => {
      const e = document.createElementNS(NS, name);
      for (const k in attrs) e.setAttribute(k, attrs[k]);
      if (text != null) e.textContent = text;
      svg.appendChild(e);
      return e;
    };
    for (let i = 0; i <= 4; i++) {
      const y = T + ((H - T - B) * i) / 4;
      el("line", { x1: L, x2: W - R, y1: y, y2: y, class: "grid" });
      el("text", { x: L - 6, y: y + 4, "text-anchor": "end", class: "axis" }, fmt(max * (1 - i / 4)) + this.unit);
    }
    if (this.points.length < 2) {
      el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis" }, "collecting samples…");
      return;
    }
    const t0 = this.points[0].t, t1 = this.points[this.points.length - 1].t;
    const span = Math.max(1, t1 - t0);
    const x = (t) => L + ((W - L - R) * (t - t0)) / span;
    const y = (v) => T + (H - T - B) * (1 - v / max);
    el("text", { x: L, y: H - 6, class: "axis" }, clock(t0));
    el("text", { x: W - R, y: H - 6, "text-anchor": "end", class: "axis" }, clock(t1));
    for (const s of this.series) {
      const pts = this.points.filter((p) => p[s.key] != null).map((p) => x(p.t).toFixed(1) + "," + y(p[s.key]).toFixed(1));
      if (pts.length < 2) continue;
      if (s.fill) {
        const first = pts[0].split(",")[0], last = pts[pts.length - 1].split(",")[0];
        el("polygon", { points: first + "," + y(0) + " " + pts.join(" ") + " " + last + "," + y(0), class: "area", fill: s.color });
      }
      el("polyline", { points: pts.join(" "), class: "line", stroke: s.color });
    }
  }
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function fmt(v) {
  if (v >= 1000) return (v / 1000).toFixed(v >= 10000 ? 0 : 1) + "k";
  if (v >= 10 || v === 0) return String(Math.round(v));
  return v.toFixed(v >= 1 ? 1 : 2);
}

/** A duration in ms as `4s`, `3m`, `2h`, `5d` (same as the server's). */
function age(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m";
  if (s < 86400) return Math.floor(s / 3600) + "h";
  return Math.floor(s / 86400) + "d";
}

function clock(ms) {
  return new Date(ms).toISOString().slice(11, 19);
}

/** Nodes the live view may move to: the operator's list, else cluster members. */
function failoverNodes() {
  const saved = (localStorage.getItem("engine-room.nodes") || "").split(/\s+/).filter(Boolean);
  const members = (document.body.dataset.nodes || "").split(/\s+/).filter(Boolean);
  return (saved.length ? saved : members).map((u) => u.replace(/\/+$/, ""));
}

function initOverview() {
  const live = $("#live");
  const rate = new LineChart($("#chart-rate"), [{ key: "rate", color: "#1f6feb", fill: true }], { unit: "" });
  const latency = new LineChart($("#chart-latency"), [
    { key: "p50", color: "#1f6feb" },
    { key: "p99", color: "#cf222e" },
  ]);
  let prev = null;
  let failures = 0;
  let source = null;

  const set = (k, v) => $$('[data-k="' + k + '"]').forEach((e) => (e.textContent = v));
  const grow = (bar, k, v) => {
    const seg = $('#' + bar + ' [data-seg="' + k + '"]');
    if (seg) seg.style.flexGrow = v;
  };

  function apply(d) {
    const f = d.fleet;
    for (const k of ["total", "healthy", "stale", "none", "quarantined", "running", "paused", "draining", "stopped", "incidents_active"]) {
      set(k, f[k]);
    }
    for (const k of ["running", "paused", "draining", "stopped"]) grow("desired-bar", k, f[k]);
    for (const k of ["healthy", "stale", "none"]) grow("heartbeat-bar", k, f[k]);
    set("healthy_percent", d.healthy_percent);
    set("healthy_nodes", d.healthy_nodes);
    set("total_nodes", d.total_nodes);
    set("leader", d.leader_id == null ? "none" : d.leader_id);
    $("#incident-stat").className = "stat " + (f.incidents_active > 0 ? "bad" : "ok");
    $("#cluster-stat").className = "stat " + (d.healthy_nodes === d.total_nodes ? "ok" : "warn");
    const tbody = $("#pool-rows");
    if (tbody && f.pools.length) {
      tbody.replaceChildren(
        ...f.pools.map((p) => {
          const tr = document.createElement("tr");
          const name = document.createElement("td");
          const a = document.createElement("a");
          a.href = BASE + "/workers?pool=" + encodeURIComponent(p.name);
          a.textContent = p.name;
          name.appendChild(a);
          if (p.is_default) name.insertAdjacentHTML("beforeend", ' <span class="badge info">default</span>');
          if (p.archived) name.insertAdjacentHTML("beforeend", ' <span class="badge muted">archived</span>');
          tr.appendChild(name);
          for (const v of [p.desired, p.total, p.healthy]) {
            const td = document.createElement("td");
            td.className = "num";
            td.textContent = v;
            tr.appendChild(td);
          }
          return tr;
        }),
      );
    }
    renderIncidents(d.incidents || [], d.at_ms);
    const j = d.jobs;
    if (j) {
      for (const k of ["queued", "running", "dead", "failed", "succeeded", "queues", "paused_queues"]) set("jobs_" + k, j[k]);
      const dead = $("#jobs-dead-stat");
      if (dead) dead.className = "stat " + (j.dead > 0 ? "bad" : "ok");
      if (j.claims_per_minute != null) {
        set("jobs_claims_rate", fmt(j.claims_per_minute));
      } else if (prev && prev.jobs && d.at_ms > prev.at_ms) {
        const perMin = Math.max(0, ((j.claims - prev.jobs.claims) * 60000) / (d.at_ms - prev.at_ms));
        set("jobs_claims_rate", fmt(perMin));
      }
    }
    if (prev && d.at_ms > prev.at_ms) {
      const r = Math.max(0, ((f.heartbeats_total - prev.fleet.heartbeats_total) * 1000) / (d.at_ms - prev.at_ms));
      rate.push({ t: d.at_ms, rate: r });
      set("rate", fmt(r));
    }
    const lat = d.commit_latency_ms || {};
    if (lat.batches > 0) {
      latency.push({ t: d.at_ms, p50: lat.p50, p99: lat.p99 });
      set("p50", lat.p50 == null ? "–" : lat.p50.toFixed(2));
      set("p99", lat.p99 == null ? "–" : lat.p99.toFixed(2));
    }
    prev = d;
    const span = Math.round((150 * (d.interval_seconds || 2)) / 60);
    $$(".chart-span").forEach((e) => (e.textContent = span));
  }

  // A node that hangs (rather than closing the connection) sends nothing and
  // raises no error: after three missed intervals, treat it as gone.
  let lastSeen = Date.now();
  let cadence = 2000;
  setInterval(() => {
    if (Date.now() - lastSeen < Math.max(6000, 3 * cadence)) return;
    lastSeen = Date.now();
    live.className = "live off";
    live.textContent = "node " + document.body.dataset.node + " not answering";
    if (source) source.close();
    moveToAnotherNode().then((moved) => {
      if (!moved) connect();
    });
  }, 1000);

  function renderIncidents(list, now) {
    const tbody = $("#incident-rows");
    if (!tbody) return;
    if (!list.length) {
      tbody.innerHTML = '<tr><td colspan="6" class="empty">No active incidents.</td></tr>';
      return;
    }
    tbody.replaceChildren(
      ...list.map((i) => {
        const tr = document.createElement("tr");
        const cells = [i.id, i.kind, i.subject, null, i.detail, age(now - i.opened_ms) + " ago"];
        cells.forEach((v, n) => {
          const td = document.createElement("td");
          if (n === 3) {
            const b = document.createElement("span");
            b.className = "badge sev-" + i.severity;
            b.textContent = i.severity;
            td.appendChild(b);
          } else {
            td.textContent = v;
          }
          tr.appendChild(td);
        });
        return tr;
      }),
    );
  }

  function connect() {
    source = new EventSource(BASE + "/events");
    source.addEventListener("snapshot", (ev) => {
      failures = 0;
      lastSeen = Date.now();
      live.className = "live on";
      live.textContent = "live · node " + document.body.dataset.node;
      try {
        const d = JSON.parse(ev.data);
        cadence = (d.interval_seconds || 2) * 1000;
        apply(d);
      } catch (e) {
        banner("Bad live update: " + e.message);
      }
    });
    source.onerror = () => {
      failures += 1;
      live.className = "live off";
      live.textContent = "reconnecting… (" + failures + ")";
      // EventSource retries the same node by itself; after a few misses,
      // look for another node that answers and continue there.
      if (failures >= 3) {
        source.close();
        moveToAnotherNode().then((moved) => {
          if (!moved) setTimeout(connect, 2000);
        });
      }
    };
  }

  let moving = false;
  /** Go to the first other node that answers; false when none does. */
  async function moveToAnotherNode() {
    if (moving) return true;
    moving = true;
    const here = location.origin;
    for (const node of failoverNodes()) {
      if (node === here) continue;
      try {
        // no-cors: we only need to know that something answers there.
        const ctl = new AbortController();
        const timer = setTimeout(() => ctl.abort(), 2000);
        await fetch(node + "/api/health/live", { mode: "no-cors", cache: "no-store", signal: ctl.signal });
        clearTimeout(timer);
        live.textContent = "moving to " + node + "…";
        if (source) source.close();
        location.href = node + BASE + "/overview";
        return true;
      } catch (_) {
        /* try the next one */
      }
    }
    moving = false;
    return false;
  }

  connect();
  window.addEventListener("beforeunload", () => source && source.close());
}

// ------------------------------------------------------------------ pools

function initPools() {
  const dlg = $("#pool-dialog");
  const form = $("#pool-form");
  const rows = $("#profile-rows");
  const err = $("#pool-error");
  let editing = null;

  function addProfileRow(provider = "", profile = "standard") {
    const frag = $("#profile-row").content.cloneNode(true);
    $("input", frag).value = provider;
    $("select", frag).value = profile;
    rows.appendChild(frag);
  }
  rows.addEventListener("click", (ev) => {
    if (ev.target.matches("[data-remove]")) ev.target.closest(".profile-row").remove();
  });
  $("#profile-add").addEventListener("click", () => addProfileRow());
  $("[data-close]", dlg).addEventListener("click", () => dlg.close());

  function open(pool) {
    editing = pool ? pool.name : null;
    form.reset();
    rows.replaceChildren();
    err.hidden = true;
    $("#pool-dialog-title").textContent = pool ? "Edit pool " + pool.name : "New pool";
    form.elements.name.value = pool ? pool.name : "";
    form.elements.name.readOnly = !!pool;
    if (pool) {
      form.elements.desired_count.value = pool.desired;
      form.elements.min_count.value = pool.min;
      form.elements.max_count.value = pool.max;
      for (const [prov, prof] of Object.entries(pool.profiles || {})) addProfileRow(prov, prof);
    }
    dlg.showModal();
  }

  $("#pool-create-open").addEventListener("click", () => open(null));
  document.addEventListener("click", (ev) => {
    const edit = ev.target.closest("[data-pool-edit]");
    if (edit) {
      const d = edit.dataset;
      open({ name: d.poolEdit, desired: d.desired, min: d.min, max: d.max, profiles: JSON.parse(d.profiles || "{}") });
      return;
    }
    const adopt = ev.target.closest("[data-pool-adopt]");
    if (adopt) {
      open(null);
      form.elements.name.value = adopt.dataset.poolAdopt;
      return;
    }
    const op = ev.target.closest("[data-pool-op]");
    if (op) {
      const name = op.dataset.poolName;
      const what = { archive: "Archive", unarchive: "Unarchive", default: "Make default" }[op.dataset.poolOp];
      confirmThen({ title: what + " pool " + name + "?", text: op.dataset.poolOp === "default" ? "Workers that name no pool join the default pool." : "", okLabel: what, danger: op.dataset.poolOp === "archive" }, async () => {
        await api("POST", "/api/pools/" + encodeURIComponent(name) + "/" + op.dataset.poolOp);
        flashAfterReload(what + ": " + name);
      });
    }
  });

  const num = (v) => (v === "" ? undefined : Number(v));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    err.hidden = true;
    const profiles = {};
    for (const r of $$(".profile-row", rows)) {
      const p = $("input", r).value.trim();
      if (p) profiles[p] = $("select", r).value;
    }
    const body = {
      desired_count: num(form.elements.desired_count.value),
      min_count: num(form.elements.min_count.value),
      max_count: num(form.elements.max_count.value),
      profiles,
    };
    try {
      if (editing) {
        await api("PATCH", "/api/pools/" + encodeURIComponent(editing), body);
      } else {
        await api("POST", "/api/pools", Object.assign({ name: form.elements.name.value.trim() }, body));
      }
      dlg.close();
      flashAfterReload((editing ? "Saved pool " : "Created pool ") + (editing || form.elements.name.value.trim()));
    } catch (e) {
      err.textContent = describe(e);
      err.hidden = false;
    }
  });

  $$(".scale-form").forEach((f) =>
    f.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const name = f.dataset.pool;
      try {
        const p = await api("POST", "/api/pools/" + encodeURIComponent(name) + "/scale", { desired_count: Number(f.elements.desired_count.value) });
        toast("Pool " + name + " scaled to " + p.desired_count);
        const row = f.closest("tr");
        row.classList.add("flash");
        // Keep the edit dialog's starting values current, or saving it would undo the scale.
        const edit = $("[data-pool-edit]", row);
        if (edit) edit.dataset.desired = p.desired_count;
      } catch (e) {
        toast("Scale " + name + ": " + describe(e), "error");
      }
    }),
  );
}

// ------------------------------------------------------------------ alerts

function initAlerts() {
  document.addEventListener("click", (ev) => {
    const b = ev.target.closest("[data-ack]");
    if (!b) return;
    const id = b.dataset.ack;
    confirmThen({ title: "Acknowledge incident #" + id + "?", text: "Add a note for whoever looks next.", withReason: true, okLabel: "Acknowledge" }, async (note) => {
      await api("POST", "/api/incidents/" + id + "/ack", note ? { note } : {});
      flashAfterReload("Incident #" + id + " acknowledged");
    });
  });
}

// ------------------------------------------------------------------ settings

function initSettings() {
  const form = $("#settings-form");
  const fields = () => $$("[data-initial]", form);
  const dirty = () => fields().filter((f) => f.value.trim() !== f.dataset.initial);

  function markDirty() {
    for (const f of fields()) f.closest(".setting").classList.toggle("dirty", f.value.trim() !== f.dataset.initial);
    const n = dirty().length;
    $("#settings-dirty").textContent = n ? n + " unsaved change" + (n > 1 ? "s" : "") : "No unsaved changes.";
  }
  form.addEventListener("input", markDirty);
  form.addEventListener("change", markDirty);

  async function save(body, what) {
    $$(".setting.invalid").forEach((s) => s.classList.remove("invalid"));
    try {
      await api("PUT", "/api/settings", body);
      flashAfterReload(what);
    } catch (e) {
      // The API names the offending key first; point at it.
      const key = Object.keys(body).find((k) => e.message.includes(k));
      if (key) {
        const s = $('.setting[data-key="' + key + '"]');
        if (s) {
          s.classList.add("invalid");
          s.scrollIntoView({ block: "center" });
        }
      }
      banner("Settings not saved: " + describe(e));
    }
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const changed = dirty();
    if (!changed.length) {
      toast("Nothing to save");
      return;
    }
    const body = {};
    for (const f of changed) body[f.name] = f.value.trim();
    save(body, "Saved " + changed.map((f) => f.name).join(", "));
  });
  form.addEventListener("click", (ev) => {
    const r = ev.target.closest("[data-reset]");
    if (!r) return;
    save({ [r.dataset.reset]: null }, r.dataset.reset + " reset to its default");
  });

  $$(".mode-form").forEach((f) =>
    f.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const provider = f.dataset.provider;
      const mode = f.elements.mode.value;
      confirmThen({ title: "Set " + provider + " to " + mode + "?", text: "Workers get the new mode with their next heartbeat.", withReason: true, okLabel: "Set mode" }, async (reason) => {
        await api("POST", "/api/providers/" + encodeURIComponent(provider) + "/mode", reason ? { mode, reason } : { mode });
        flashAfterReload(provider + " mode set to " + mode);
      });
    }),
  );
}

// ------------------------------------------------------------------ cluster

function initCluster() {
  $("#learner-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const id = Number(f.elements.id.value);
    const addr = f.elements.addr.value.trim();
    try {
      await api("POST", "/api/cluster/learners", { id, addr });
      flashAfterReload("Node " + id + " added as a learner");
    } catch (e) {
      banner("Could not add node " + id + ": " + describe(e));
    }
  });
  document.addEventListener("click", (ev) => {
    const b = ev.target.closest("[data-member]");
    if (!b) return;
    const id = Number(b.dataset.id);
    const op = b.dataset.member;
    const text = op === "promote" ? "Node " + id + " becomes a voter." : "Node " + id + " leaves the cluster. A voter's removal shrinks the quorum.";
    confirmThen({ title: (op === "promote" ? "Promote" : "Remove") + " node " + id + "?", text, okLabel: op === "promote" ? "Promote" : "Remove", danger: op === "remove" }, async () => {
      await api("POST", "/api/cluster/" + op, { id });
      flashAfterReload((op === "promote" ? "Promoted" : "Removed") + " node " + id);
    });
  });
  const ff = $("#failover-form");
  ff.elements.nodes.value = (localStorage.getItem("engine-room.nodes") || "").split(/\s+/).filter(Boolean).join("\n");
  ff.elements.nodes.placeholder = (document.body.dataset.nodes || "").split(/\s+/).join("\n");
  ff.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const list = ff.elements.nodes.value.split(/\s+/).filter(Boolean);
    const bad = list.find((u) => !/^https?:\/\/[^\s/]+$/.test(u.replace(/\/+$/, "")));
    if (bad) {
      banner("Not a node URL: " + bad + " (expected e.g. http://10.0.0.2:7001)");
      return;
    }
    banner(null);
    localStorage.setItem("engine-room.nodes", list.join(" "));
    toast(list.length ? "Failover list saved (" + list.length + " nodes)" : "Failover list cleared: using cluster members");
  });
}

// ------------------------------------------------------------------ build farm

/** `NAME=value` lines as an object; throws naming the first bad line. */
function envLines(text, what) {
  const env = {};
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (!line) return;
    const eq = line.indexOf("=");
    if (eq < 1) throw new Error(what + " line " + (i + 1) + ": expected NAME=value, got " + JSON.stringify(line));
    env[line.slice(0, eq).trim()] = line.slice(eq + 1);
  });
  return env;
}

/** Keep `results` current from `path?...&partial=rows`: filters, paging, polling. */
function livePartial({ form, results, live, path, defaults = {} }) {
  let current = location.search.replace(/^\?/, "");
  let loading = null;
  function queryFromForm() {
    const p = new URLSearchParams();
    for (const [k, v] of new FormData(form).entries()) {
      if (v !== "" && defaults[k] !== v) p.set(k, v);
    }
    return p.toString();
  }
  async function load(query, opts = {}) {
    if (loading) loading.abort();
    const ctl = new AbortController();
    loading = ctl;
    try {
      const res = await fetch(BASE + path + "?" + query + (query ? "&" : "") + "partial=rows", { credentials: "same-origin", signal: ctl.signal });
      if (!res.ok) throw new Error("HTTP " + res.status);
      results.innerHTML = await res.text();
      current = query;
      if (!opts.keepUrl) history.replaceState(null, "", BASE + path + (query ? "?" + query : ""));
      if (live) {
        live.className = "live on";
        live.textContent = "live · every " + (Number(document.body.dataset.poll) || 10) + " s";
      }
      banner(null);
    } catch (e) {
      if (e.name !== "AbortError") {
        if (live) {
          live.className = "live off";
          live.textContent = "not refreshing";
        }
        banner("Could not refresh: " + describe(e));
      }
    } finally {
      if (loading === ctl) loading = null;
    }
  }
  let typing = null;
  form.addEventListener("input", (ev) => {
    clearTimeout(typing);
    const delay = ev.target.type === "search" ? 350 : 0;
    typing = setTimeout(() => load(queryFromForm()), delay);
  });
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    load(queryFromForm());
  });
  results.addEventListener("click", (ev) => {
    const a = ev.target.closest("a[data-page-link]");
    if (!a) return;
    ev.preventDefault();
    load(new URL(a.href).search.replace(/^\?/, ""));
  });
  const every = Math.max(1, Number(document.body.dataset.poll) || 10) * 1000;
  setInterval(() => {
    if ($("#confirm").open || document.hidden || loading) return;
    const a = document.activeElement;
    if (a && (a.type === "search" || a.type === "date" || a.closest("#enqueue-form"))) return;
    load(current, { keepUrl: true });
  }, every);
  if (live) {
    live.className = "live on";
    live.textContent = "live · every " + every / 1000 + " s";
  }
  return { reload: () => load(current, { keepUrl: true }) };
}

function initBuilds() {
  const results = $("#build-results");
  const view = livePartial({ form: $("#build-filters"), results, live: $("#builds-live"), path: "/builds", defaults: { limit: "50" } });
  if (document.body.dataset.readOnly) return;
  wireJobActions(results, () => view.reload());
  const form = $("#enqueue-form");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = form.elements;
    const body = { package: f.package.value.trim(), version: f.version.value.trim(), priority: Number(f.priority.value || 0) };
    if (f.run_id.value.trim()) body.run_id = f.run_id.value.trim();
    try {
      const j = await api("POST", "/queue/enqueue", body);
      toast("Queued " + body.package + " " + body.version + " as job " + j.job_id);
      await view.reload();
    } catch (e) {
      banner("Build not queued: " + describe(e));
    }
  });
  $("#queue-clear").addEventListener("click", () => {
    const depth = ($('[data-k="queue_depth"]') || {}).textContent || "every";
    confirmThen(
      { title: "Clear the build queue?", text: "Cancels " + depth + " queued and retry-waiting builds; running builds run on. Recorded in the audit log.", okLabel: "Clear queue", danger: true },
      async () => {
        const r = await api("POST", "/queue/clear");
        toast("Build queue cleared: " + r.cancelled + " builds cancelled");
        await view.reload();
      },
    );
  });
}

function initBuildPackage() {
  if (document.body.dataset.readOnly) return;
  document.addEventListener("click", async (ev) => {
    const b = ev.target.closest("[data-rebuild]");
    if (!b) return;
    b.disabled = true;
    try {
      const j = await api("POST", "/queue/enqueue", { package: b.dataset.package, version: b.dataset.rebuild });
      toast("Queued " + b.dataset.package + " " + b.dataset.rebuild + " as job " + j.job_id);
    } catch (e) {
      toast("Rebuild: " + describe(e), "error");
    } finally {
      b.disabled = false;
    }
  });
}

/** Ask the server where `pattern` matches `log`; the answer is HTML (escaped there). */
async function testPattern(pattern, log, into) {
  const res = await fetch(BASE + "/hints/test", {
    method: "POST",
    credentials: "same-origin",
    headers: { "x-engine-csrf": "1", "content-type": "application/json" },
    body: JSON.stringify({ pattern, log }),
  });
  const text = await res.text();
  if (res.ok) {
    into.innerHTML = text;
  } else {
    into.innerHTML = "";
    const d = document.createElement("div");
    d.className = "form-error";
    d.textContent = text || "HTTP " + res.status;
    into.appendChild(d);
  }
}

function initHints() {
  const card = $("#pattern-test-form");
  card.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    await testPattern(card.elements.pattern.value, card.elements.log.value, $("#pattern-test-result"));
  });
  if (document.body.dataset.readOnly) return;
  const dlg = $("#hint-dialog");
  const form = $("#hint-form");
  const err = $("#hint-error");
  let editing = null;
  function open(h) {
    editing = h ? h.id : null;
    form.reset();
    err.hidden = true;
    $("#hint-test-result").innerHTML = "";
    $("#hint-dialog-title").textContent = h ? "Edit hint #" + h.id : "New hint";
    if (h) {
      form.elements.pattern.value = h.pattern;
      form.elements.env.value = h.env;
      form.elements.requirements.value = h.requirements;
      form.elements.note.value = h.note;
    }
    dlg.showModal();
  }
  $("#hint-create-open").addEventListener("click", () => open(null));
  $("[data-close]", dlg).addEventListener("click", () => dlg.close());
  $("#hint-test-run").addEventListener("click", () => testPattern(form.elements.pattern.value, form.elements.log.value, $("#hint-test-result")));
  document.addEventListener("click", (ev) => {
    const e = ev.target.closest("[data-hint-edit]");
    if (e) {
      const d = e.dataset;
      open({ id: d.hintEdit, pattern: d.pattern, env: d.env, requirements: d.requirements, note: d.note });
      return;
    }
    const del = ev.target.closest("[data-hint-delete]");
    if (del) {
      const id = del.dataset.hintDelete;
      confirmThen({ title: "Delete hint #" + id + "?", text: "Pattern " + del.dataset.pattern + ". Events keep the ids they recorded.", okLabel: "Delete", danger: true }, async () => {
        await api("DELETE", "/hints/" + encodeURIComponent(id));
        flashAfterReload("Deleted hint #" + id);
      });
    }
  });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    err.hidden = true;
    const f = form.elements;
    try {
      const body = {
        pattern: f.pattern.value,
        recipe: {
          env: envLines(f.env.value, "Environment"),
          extra_requirements: f.requirements.value.split("\n").map((r) => r.trim()).filter(Boolean),
          note: f.note.value,
        },
      };
      const h = editing ? await api("PUT", "/hints/" + encodeURIComponent(editing), body) : await api("POST", "/hints", body);
      dlg.close();
      flashAfterReload((editing ? "Saved hint #" : "Created hint #") + h.id);
    } catch (e) {
      err.textContent = describe(e);
      err.hidden = false;
    }
  });
}

function initPlan() {
  const sel = $("#plan-version");
  if (sel) sel.addEventListener("change", () => sel.form.submit());
}

function initFarmConfig() {
  const form = $("#farm-config-form");
  if (!form) return;
  const fields = () => $$("[data-initial]", form);
  const dirty = () => fields().filter((f) => f.value.trim() !== f.dataset.initial.trim());
  const mark = () => {
    for (const f of fields()) f.closest(".setting").classList.toggle("dirty", f.value.trim() !== f.dataset.initial.trim());
    const n = dirty().length;
    $("#farm-dirty").textContent = n ? n + " unsaved change" + (n > 1 ? "s" : "") : "No unsaved changes.";
  };
  form.addEventListener("input", mark);
  form.addEventListener("change", mark);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = form.elements;
    try {
      const body = {
        strategy: f.strategy.value,
        python: f.python.value.trim(),
        platform: f.platform.value.trim(),
        index_url: f.index_url.value.trim(),
        env: envLines(f.env.value, "Environment"),
      };
      await api("PUT", "/config", body);
      flashAfterReload("Saved the build farm config");
    } catch (e) {
      banner("Farm config not saved: " + describe(e));
    }
  });
}

// ------------------------------------------------------------------ boot

document.addEventListener("DOMContentLoaded", () => {
  showFlash();
  const page = document.body.dataset.page;
  const init = {
    overview: initOverview,
    workers: $("#worker-filters") ? initWorkers : initWorkerDetail,
    jobs: $("#job-filters") ? initJobs : initJobDetail,
    pools: initPools,
    alerts: initAlerts,
    settings: () => {
      initSettings();
      initFarmConfig();
    },
    builds: $("#build-filters") ? initBuilds : $("[data-build-package]") ? initBuildPackage : null,
    plan: initPlan,
    hints: initHints,
    cluster: initCluster,
  }[page];
  if (init) init();
});
