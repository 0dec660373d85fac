// Browser tests of the operator UI: Debian's Chromium, headless, driven by
// playwright-core against a running local cluster (started by run.sh).
//
// Env: UI_URL (a follower's origin), API_URL (any node, for checks), TOKEN,
// SHOT_DIR, NODE_PIDS ("id:pid,..." of the node processes run.sh started),
// FOLLOWER_ID, SCALE_WORKERS (default 10000).
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const UI = process.env.UI_URL;
const API = process.env.API_URL || UI;
const TOKEN = process.env.TOKEN;
const SHOTS = process.env.SHOT_DIR || "screenshots";
const SCALE = Number(process.env.SCALE_WORKERS || 10000);
const BASE = "/verifier-engine-room";
const PAGES = ["overview", "workers", "jobs", "alerts", "builds", "plan", "hints", "pools", "settings", "cluster"];
if (!UI || !TOKEN) throw new Error("UI_URL and TOKEN are required");
mkdirSync(SHOTS, { recursive: true });

let passed = 0;
let failed = 0;
const failures = [];

async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    passed += 1;
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed += 1;
    failures.push(name);
    console.log(`FAIL ${name} (${Date.now() - t0} ms)\n     ${String(e && e.stack ? e.stack : e).split("\n").slice(0, 6).join("\n     ")}`);
  }
}

function assert(cond, message) {
  if (!cond) throw new Error("assertion failed: " + message);
}

async function apiGet(path, base = API) {
  const res = await fetch(base + path, { headers: { authorization: "Bearer " + TOKEN } });
  const body = await res.json();
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status} ${JSON.stringify(body)}`);
  return body;
}

async function apiSend(method, path, body, base = API) {
  const res = await fetch(base + path, {
    method,
    headers: { authorization: "Bearer " + TOKEN, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await res.json();
  if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status} ${JSON.stringify(answer)}`);
  return answer;
}

async function waitFor(what, fn, timeoutMs = 10000, everyMs = 200) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const context = await browser.newContext({
  httpCredentials: { username: "operator", password: TOKEN },
  viewport: { width: 1440, height: 900 },
});

// Every console error and uncaught page error, per page, is a failure.
const problems = [];
// CSP violations are recorded by the page itself (and Chromium also logs
// them as console errors, which fail every step).
const CSP_WATCH = `window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) =>
  window.__cspViolations.push(e.violatedDirective + " " + (e.blockedURI || "inline")));`;
await context.addInitScript(CSP_WATCH);
function watch(page) {
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`${page.url()}: console: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`${page.url()}: pageerror: ${e.message}`));
  return page;
}
async function noProblems(since) {
  const fresh = problems.slice(since);
  assert(fresh.length === 0, "console/page errors:\n  " + fresh.join("\n  "));
}

const page = watch(await context.newPage());
let pausedWorker = null;

await step("UI without credentials answers 401 with a Basic challenge", async () => {
  const res = await fetch(UI + BASE + "/overview");
  assert(res.status === 401, "status " + res.status);
  const challenge = res.headers.get("www-authenticate") || "";
  assert(/^Basic /.test(challenge), "challenge " + challenge);
  const wrong = await fetch(UI + BASE + "/overview", { headers: { authorization: "Basic " + btoa("x:wrong") } });
  assert(wrong.status === 401, "wrong password gives " + wrong.status);
});

await step("state-changing API call with basic auth but no CSRF header is refused", async () => {
  const res = await fetch(UI + "/api/workers/sim-000/pause", {
    method: "POST",
    headers: { authorization: "Basic " + btoa("op:" + TOKEN), "content-type": "application/json" },
    body: "{}",
  });
  assert(res.status === 403, "status " + res.status);
});

await step("log in and see heartbeating workers on a follower's UI", async () => {
  const since = problems.length;
  const res = await page.goto(UI + BASE + "/workers");
  assert(res.status() === 200, "status " + res.status());
  assert((await page.locator("body").getAttribute("data-page")) === "workers", "workers page");
  const role = (await page.locator(".node-card .badge").first().textContent()).trim();
  if (role !== "follower") {
    // Only acceptable if leadership really moved here since run.sh looked.
    const st = await apiGet("/api/cluster/status");
    assert(String(st.leader_id) === process.env.FOLLOWER_ID, "UI node role is " + role);
    console.log("     (leadership moved to the tested node; it is now the leader)");
  }
  await waitFor("healthy workers in the table", async () => (await page.locator("#workers-table .badge.hb-healthy").count()) > 0);
  const rows = await page.locator("#workers-table tbody tr[data-worker]").count();
  assert(rows > 0, "rows " + rows);
  await page.screenshot({ path: `${SHOTS}/workers.png`, fullPage: true });
  await noProblems(since);
});

await step("pause a worker with a reason from its row; the table updates without a reload", async () => {
  const since = problems.length;
  // Narrow to running workers so the first row has a Pause button.
  await page.selectOption('select[name="desired_state"]', "running");
  await waitFor("filtered table", async () => new URL(page.url()).searchParams.get("desired_state") === "running");
  const row = page.locator("#workers-table tbody tr[data-worker]").first();
  pausedWorker = await row.getAttribute("data-worker");
  assert(pausedWorker, "a running worker");
  await page.evaluate(() => (window.__noReload = true));
  await page.selectOption('select[name="desired_state"]', "");
  await page.fill('input[name="q"]', pausedWorker);
  const target = page.locator(`#workers-table tr[data-worker="${pausedWorker}"]`);
  await target.waitFor();
  await target.locator('button[data-action="pause"]').click();
  await page.locator("#confirm").waitFor({ state: "visible" });
  assert((await page.locator("#confirm-title").textContent()).includes(pausedWorker), "dialog names the worker");
  await page.fill("#confirm-reason", "browser test: pause");
  await page.screenshot({ path: `${SHOTS}/workers-pause-dialog.png` });
  await page.click("#confirm-ok");
  await page.locator("#confirm").waitFor({ state: "hidden" });
  await waitFor("row shows paused", async () =>
    (await page.locator(`#workers-table tr[data-worker="${pausedWorker}"] [data-field="desired"]`).textContent()).trim() === "paused",
  );
  assert(await page.evaluate(() => window.__noReload === true), "page was reloaded");
  assert((await page.locator(`#workers-table tr[data-worker="${pausedWorker}"] button[data-action="resume"]`).count()) === 1, "resume offered");
  const w = await apiGet("/api/workers/" + pausedWorker);
  assert(w.desired_state === "paused", "API says " + w.desired_state);
  await page.screenshot({ path: `${SHOTS}/workers-after-pause.png`, fullPage: true });
  await noProblems(since);
});

await step("worker detail shows metrics and the audit entry with the reason", async () => {
  const since = problems.length;
  await page.goto(UI + BASE + "/workers/" + pausedWorker);
  await page.locator("[data-worker-detail]").waitFor();
  const audit = await page.locator("#worker-audit").textContent();
  assert(audit.includes("browser test: pause"), "audit shows the reason: " + audit.slice(0, 300));
  assert((await page.locator(".hbar").count()) > 0, "metric bars");
  await page.screenshot({ path: `${SHOTS}/worker-detail.png`, fullPage: true });
  await noProblems(since);
});

await step("overview streams live updates (SSE) and draws both charts", async () => {
  const since = problems.length;
  await page.goto(UI + BASE + "/overview");
  await page.locator("#live.on").waitFor({ timeout: 10000 });
  await waitFor("two rate samples", async () => (await page.locator("#chart-rate polyline").count()) > 0, 20000);
  await waitFor("latency samples", async () => (await page.locator("#chart-latency polyline").count()) > 0, 20000);
  const total = Number(await page.locator('.stat-value[data-k="total"]').textContent());
  assert(total >= 1, "workers total " + total);
  const paused = Number(await page.locator('strong[data-k="paused"]').textContent());
  assert(paused >= 1, "paused count " + paused);
  await page.screenshot({ path: `${SHOTS}/overview.png`, fullPage: true });
  await noProblems(since);
});

await step("every page runs under a CSP without inline script, and breaks none of it", async () => {
  const since = problems.length;
  for (const p of PAGES) {
    const res = await page.goto(UI + BASE + "/" + p);
    const csp = res.headers()["content-security-policy"] || "";
    assert(/(^|;)\s*script-src 'self'\s*(;|$)/.test(csp), p + " CSP " + csp);
    assert(/frame-ancestors 'none'/.test(csp), p + " frame-ancestors " + csp);
    assert(res.headers()["x-frame-options"] === "DENY", p + " x-frame-options");
    await page.waitForLoadState("load");
    await page.waitForTimeout(300);
    const violations = await page.evaluate(() => window.__cspViolations);
    assert(violations.length === 0, p + " CSP violations: " + violations.join(", "));
  }
  await noProblems(since);
  // The policy is in force: an injected inline script does not run and is
  // reported (so a template that grew one would fail the step above).
  const ran = await page.evaluate(async () => {
    window.__inlineRan = false;
    const s = document.createElement("script");
    s.textContent = "window.__inlineRan = true";
    document.body.appendChild(s);
    await new Promise((r) => setTimeout(r, 100));
    return { ran: window.__inlineRan, violations: window.__cspViolations.slice() };
  });
  assert(!ran.ran, "an inline script ran despite the CSP");
  assert(ran.violations.some((v) => v.startsWith("script-src")), "no violation reported: " + ran.violations.join(", "));
  problems.splice(since); // the refused injection's console line was expected
});

await step("every page opens with no console or page error", async () => {
  const since = problems.length;
  for (const p of PAGES) {
    const res = await page.goto(UI + BASE + "/" + p);
    assert(res.status() === 200, p + " status " + res.status());
    await page.waitForLoadState("load");
    await page.waitForTimeout(300);
    assert((await page.locator(`.sidebar a.active`).textContent()).length > 0, p + " nav");
    await page.screenshot({ path: `${SHOTS}/page-${p}.png`, fullPage: true });
  }
  await noProblems(since);
  // An unknown page is a readable 404 page (Chromium logs the 404 itself).
  const missing = await page.goto(UI + BASE + "/no-such-page");
  assert(missing.status() === 404, "unknown page gives " + missing.status());
  assert((await page.locator("main").textContent()).includes("no-such-page"), "404 page names the path");
});

await step("settings: an invalid value shows the API's validation error on the page", async () => {
  const since = problems.length;
  await page.goto(UI + BASE + "/settings");
  await page.fill("#s-ALERT_CHECK_INTERVAL_SECONDS", "0");
  await page.click("#settings-save");
  const banner = page.locator("#banner");
  await banner.waitFor({ state: "visible" });
  const text = await banner.textContent();
  assert(text.includes("ALERT_CHECK_INTERVAL_SECONDS") && text.includes("from 1 to 99999"), "banner: " + text);
  assert((await page.locator('.setting.invalid[data-key="ALERT_CHECK_INTERVAL_SECONDS"]').count()) === 1, "field marked");
  await page.screenshot({ path: `${SHOTS}/settings-validation-error.png`, fullPage: false });
  // A valid change saves and survives a reload.
  await page.fill("#s-ALERT_CHECK_INTERVAL_SECONDS", "30");
  await page.fill("#s-UI_POLL_INTERVAL_SECONDS", "5");
  // A successful save reloads the page shortly after; wait for that reload,
  // or the next step's navigation would be aborted by it.
  const reloaded = page.waitForEvent("framenavigated", { timeout: 15000 });
  await page.click("#settings-save");
  await reloaded;
  await page.waitForLoadState("load");
  await waitFor("override saved", async () => (await apiGet("/api/settings")).settings.find((s) => s.key === "UI_POLL_INTERVAL_SECONDS").value === "5");
  // The console logs the refused PUT as a failed resource load (HTTP 400);
  // that one is expected, any other error is not.
  const unexpected = problems.slice(since).filter((p) => !/status of 400/.test(p));
  assert(unexpected.length === 0, "errors: " + unexpected.join("; "));
});

await step("pools: create with a provider profile, scale, set default", async () => {
  const since = problems.length;
  await page.goto(UI + BASE + "/pools");
  await page.click("#pool-create-open");
  await page.fill('#pool-form input[name="name"]', "bt-pool");
  await page.fill('#pool-form input[name="desired_count"]', "2");
  await page.fill('#pool-form input[name="min_count"]', "1");
  await page.fill('#pool-form input[name="max_count"]', "6");
  await page.click("#profile-add");
  await page.fill('#profile-rows input[name="provider"]', "gmail");
  await page.selectOption('#profile-rows select[name="profile"]', "low_hit");
  await page.screenshot({ path: `${SHOTS}/pools-create-dialog.png` });
  await page.click('#pool-form button[type="submit"]');
  await page.locator('tr[data-pool="bt-pool"]').waitFor();
  let p = await apiGet("/api/pools/bt-pool");
  assert(p.desired_count === 2 && p.profiles.gmail === "low_hit", "pool " + JSON.stringify(p));
  await page.fill('tr[data-pool="bt-pool"] input[name="desired_count"]', "4");
  await page.click('tr[data-pool="bt-pool"] .scale-form button');
  await waitFor("scaled", async () => (await apiGet("/api/pools/bt-pool")).desired_count === 4);
  // An edit the API refuses (min above max): its message shows in the dialog.
  await page.click('button[data-pool-edit="bt-pool"]');
  await page.fill('#pool-form input[name="min_count"]', "9");
  await page.fill('#pool-form input[name="max_count"]', "3");
  await page.click('#pool-form button[type="submit"]');
  assert((await page.inputValue('#pool-form input[name="desired_count"]')) === "4", "edit dialog starts from the scaled count");
  await page.locator("#pool-error").waitFor({ state: "visible" });
  const poolErr = await page.locator("#pool-error").textContent();
  assert(poolErr.includes("min_count 9 is greater than max_count 3"), "pool error: " + poolErr);
  await page.screenshot({ path: `${SHOTS}/pools-edit-error.png` });
  await page.click("#pool-dialog [data-close]");
  assert((await apiGet("/api/pools/bt-pool")).min_count === 1, "refused edit changed nothing");
  await page.click('button[data-pool-op="default"][data-pool-name="bt-pool"]');
  await page.click("#confirm-ok");
  await page.locator('tr[data-pool="bt-pool"] .badge.info').waitFor();
  p = await apiGet("/api/pools/bt-pool");
  assert(p.is_default === true, "default " + JSON.stringify(p));
  await page.screenshot({ path: `${SHOTS}/pools.png`, fullPage: true });
  // The refused edit (min above max) is a 409 conflict.
  const unexpected = problems.slice(since).filter((x) => !/status of 409/.test(x));
  assert(unexpected.length === 0, "errors: " + unexpected.join("; "));
});

await step("cluster page lists every node with role, term, indexes and lag", async () => {
  const since = problems.length;
  await page.goto(UI + BASE + "/cluster");
  const rows = await page.locator("#nodes-table tbody tr").count();
  const status = await apiGet("/api/cluster/status");
  assert(rows === status.nodes.length, `rows ${rows} vs ${status.nodes.length}`);
  assert((await page.locator("#nodes-table .role-leader").count()) === 1, "one leader");
  // The supervised loops of this node, as GET /api/cluster/loops lists them.
  const loops = await apiGet("/api/cluster/loops");
  const shown = await page.locator("#loops-table tbody tr").evaluateAll((rs) => rs.map((r) => r.dataset.loop));
  assert(loops.loops.length >= 7, "loops " + JSON.stringify(loops));
  assert(JSON.stringify(shown) === JSON.stringify(loops.loops.map((l) => l.name)), `loops shown ${shown}`);
  assert((await page.locator("#not-a-member").count()) === 0, "no removed-node banner on a member");
  // A bad learner address: the API's error is shown, nothing changes.
  await page.fill('#learner-form input[name="id"]', "9");
  await page.fill('#learner-form input[name="addr"]', "not-a-url");
  await page.click("#learner-form button");
  await page.locator("#banner").waitFor({ state: "visible" });
  assert((await page.locator("#banner").textContent()).includes("http://"), "learner error shown");
  const unexpected = problems.slice(since).filter((x) => !/status of 400/.test(x));
  assert(unexpected.length === 0, "errors: " + unexpected.join("; "));
});

// ------------------------------------------------------------------ jobs

// Jobs seeded over HTTP as a producer and a worker would: two queues, one
// job completed, one failed for good (dead), one left running, the rest
// queued. Payloads and errors carry markup: the pages must show it as text.
const jobs = {};
async function enqueue(body) {
  return await apiSend("POST", "/api/v1/jobs", body);
}
async function claimOne(queue, worker) {
  const r = await apiSend("POST", "/internal/worker/claim", { worker_id: worker, queues: [queue], max_jobs: 1 });
  assert(r.jobs.length === 1, `claimed from ${queue}: ${JSON.stringify(r)}`);
  return r.jobs[0];
}

await step("jobs: seed queues over the API (enqueue, claim, complete, fail)", async () => {
  // A fresh cluster reaches format 5 (jobs) shortly after it starts.
  const first = await waitFor(
    "the jobs API (cluster format 5)",
    async () => enqueue({ queue: "bt-mail", kind: "send", payload: { to: "a@example.com", html: "<img src=x id=bt-injected>" } }),
    30000,
    500,
  );
  jobs.first = first.job_id;
  jobs.doneId = (await enqueue({ queue: "bt-mail", kind: "send", payload: { n: 2 } })).job_id;
  jobs.deadId = (await enqueue({ queue: "bt-mail", kind: "send", payload: { n: 3 }, max_attempts: 1 })).job_id;
  jobs.runId = (await enqueue({ queue: "bt-mail", kind: "send", payload: { n: 4 } })).job_id;
  jobs.scanA = (await enqueue({ queue: "bt-bulk", kind: "scan", payload: { n: 5 } })).job_id;
  jobs.scanB = (await enqueue({ queue: "bt-bulk", kind: "scan", payload: { n: 6 } })).job_id;
  // FIFO within a queue: the claims take the oldest first.
  const a = await claimOne("bt-mail", "bt-jobworker");
  assert(a.job_id === jobs.first, `first claim ${a.job_id} vs ${jobs.first}`);
  await apiSend("POST", "/internal/worker/complete", {
    job_id: a.job_id, worker_id: "bt-jobworker", lease_token: a.lease_token, result: { ok: true },
    logs: ["connected to mx.example.com", "sent <script>window.__bt=1</script>"],
  });
  jobs.doneId = a.job_id;
  const b = await claimOne("bt-mail", "bt-jobworker");
  await apiSend("POST", "/internal/worker/fail", { job_id: b.job_id, worker_id: "bt-jobworker", lease_token: b.lease_token, error: "<b>boom</b> smtp 550", retryable: false });
  jobs.deadId = b.job_id;
  const c = await claimOne("bt-mail", "bt-other-worker");
  jobs.runId = c.job_id;
  jobs.runToken = c.lease_token;
  const dead = await apiGet("/api/v1/jobs/" + jobs.deadId);
  assert(dead.state === "dead", "dead job: " + JSON.stringify(dead));
  console.log(`     jobs: done ${jobs.doneId}, dead ${jobs.deadId}, running ${jobs.runId}, bulk ${jobs.scanA} ${jobs.scanB}`);
});

const jobRows = async () => page.locator("#jobs-table tbody tr[data-job]").evaluateAll((rs) => rs.map((r) => ({ id: Number(r.dataset.job), state: r.dataset.state })));

await step("jobs page: per-queue cards and the table, newest first", async () => {
  const since = problems.length;
  const res = await page.goto(UI + BASE + "/jobs");
  assert(res.status() === 200, "status " + res.status());
  assert((await page.locator("body").getAttribute("data-page")) === "jobs", "jobs page");
  assert((await page.locator('nav a.active[href$="/jobs"]').count()) === 1, "nav entry current");
  // The follower may still be applying the seed: wait until its cards show it.
  await waitFor("the bt-mail card with one dead job", async () => {
    await page.goto(UI + BASE + "/jobs");
    return (await page.locator('.queue-card[data-queue="bt-mail"] [data-k="dead"]').textContent()).trim() === "1";
  });
  const mail = page.locator('.queue-card[data-queue="bt-mail"]');
  assert((await mail.locator('[data-k="running"]').textContent()).trim() === "1", "one running");
  assert((await mail.locator('[data-k="succeeded"]').textContent()).trim() === "1", "one succeeded");
  assert((await mail.locator('[data-k="queued"]').textContent()).trim() === "1", "one left queued");
  const bulk = page.locator('.queue-card[data-queue="bt-bulk"]');
  assert((await bulk.locator('[data-k="queued"]').textContent()).trim() === "2", "two queued in bt-bulk");
  assert((await bulk.locator('[data-k="oldest"]').textContent()).trim() !== "–", "an oldest queued age");
  const rows = await jobRows();
  assert(rows.length >= 6, "rows " + rows.length);
  const ids = rows.map((r) => r.id);
  assert(JSON.stringify(ids) === JSON.stringify([...ids].sort((x, y) => y - x)), "newest first: " + ids);
  assert((await page.locator("#bt-injected").count()) === 0, "no markup from a payload");
  await page.screenshot({ path: `${SHOTS}/jobs.png`, fullPage: true });
  await noProblems(since);
});

await step("jobs page: filters by state, kind, queue and worker; more pages by cursor; live refresh", async () => {
  const since = problems.length;
  await page.goto(UI + BASE + "/jobs");
  await page.evaluate(() => (window.__noReload = true));
  await page.selectOption('#job-filters select[name="state"]', "dead");
  await waitFor("dead filter", async () => new URL(page.url()).searchParams.get("state") === "dead" && (await jobRows()).every((r) => r.state === "dead"));
  assert((await jobRows()).some((r) => String(r.id) === jobs.deadId), "the dead job listed");
  await page.selectOption('#job-filters select[name="state"]', "");
  await page.fill('#job-filters input[name="kind"]', "scan");
  await waitFor("kind filter", async () => {
    const r = await jobRows();
    return r.length === 2 && r.every((x) => [jobs.scanA, jobs.scanB].includes(String(x.id)));
  });
  await page.fill('#job-filters input[name="kind"]', "");
  await page.fill('#job-filters input[name="worker"]', "bt-jobworker");
  await waitFor("worker filter", async () => {
    const r = (await jobRows()).map((x) => String(x.id)).sort();
    return JSON.stringify(r) === JSON.stringify([jobs.doneId, jobs.deadId].sort());
  });
  await page.fill('#job-filters input[name="worker"]', "");
  await page.selectOption('#job-filters select[name="queue"]', "bt-bulk");
  await waitFor("queue filter", async () => (await jobRows()).length === 2);
  // Two rows a page: "More" goes on below the last id shown.
  await page.selectOption('#job-filters select[name="queue"]', "");
  await page.goto(UI + BASE + "/jobs?limit=50&queue=bt-mail");
  const all = (await jobRows()).map((r) => r.id);
  assert(all.length === 4, "bt-mail rows " + all);
  await page.goto(UI + BASE + "/jobs?queue=bt-mail");
  await page.evaluate(() => (window.__noReload = true));
  // The table follows new jobs without a reload.
  const fresh = (await enqueue({ queue: "bt-mail", kind: "send", payload: { n: 7 } })).job_id;
  await waitFor("the new job appears by itself", async () => (await jobRows()).some((r) => String(r.id) === fresh), 15000);
  assert(await page.evaluate(() => window.__noReload === true), "page was reloaded");
  jobs.fresh = fresh;
  // Two rows a page: "More" continues below the last id shown, in place.
  await page.goto(UI + BASE + "/jobs?queue=bt-mail&limit=2");
  await page.evaluate(() => (window.__noReload = true));
  const first = (await jobRows()).map((r) => r.id);
  assert(first.length === 2 && String(first[0]) === fresh, "first page " + first);
  await page.click("#job-more");
  await waitFor("the second page", async () => new URL(page.url()).searchParams.get("cursor") === String(first[1]));
  const second = (await jobRows()).map((r) => r.id);
  assert(second.length === 2 && Math.max(...second) < first[1], "second page " + second + " after " + first);
  assert(second.every((x) => all.includes(x)), "older bt-mail jobs: " + second);
  assert(await page.evaluate(() => window.__noReload === true), "page was reloaded");
  await page.screenshot({ path: `${SHOTS}/jobs-filtered.png`, fullPage: true });
  await noProblems(since);
});

await step("job detail: attempts, lease with a shortened token, error and payload as text", async () => {
  const since = problems.length;
  const res = await page.goto(UI + BASE + "/jobs/" + jobs.deadId);
  assert(res.status() === 200, "status " + res.status());
  await page.locator("[data-job-detail]").waitFor();
  assert((await page.locator('[data-job-detail] [data-field="state"]').textContent()).trim() === "dead", "dead");
  const attempts = page.locator("#job-attempts tbody tr");
  assert((await attempts.count()) === 1, "one attempt");
  const attempt = await attempts.first().textContent();
  assert(attempt.includes("bt-jobworker") && attempt.includes("failed (final)"), "attempt row: " + attempt);
  assert((await page.locator("#job-error").textContent()).includes("<b>boom</b> smtp 550"), "error shown as text");
  assert((await page.locator("#job-error b").count()) === 0, "no markup from an error");
  assert((await page.locator("#job-logs").textContent()).includes("No log lines"), "a job without log lines says so");
  assert((await page.locator('button[data-job-action="requeue"]').count()) === 1, "requeue offered");
  assert((await page.locator('button[data-job-action="cancel"]').count()) === 0, "no cancel for a dead job");
  await page.screenshot({ path: `${SHOTS}/job-dead.png`, fullPage: true });
  // A running job: the lease, with its token cut short.
  await page.goto(UI + BASE + "/jobs/" + jobs.runId);
  const lease = await page.locator("#job-lease").textContent();
  assert(lease.includes("bt-other-worker"), "lease holder: " + lease);
  assert(!(await page.content()).includes(jobs.runToken), "the full lease token is not on the page");
  assert(lease.includes(jobs.runToken.split("-")[0] + "-" + jobs.runToken.split("-")[1].slice(0, 4) + "…"), "short token: " + lease);
  // The first job's payload: markup as text.
  await page.goto(UI + BASE + "/jobs/" + jobs.doneId);
  assert((await page.locator("#job-result").textContent()).includes('"ok": true'), "result shown");
  const logText = await page.locator("#job-logs").textContent();
  assert(logText.includes("connected to mx.example.com") && logText.includes("sent <script>window.__bt=1</script>"), "log lines as text: " + logText);
  assert((await page.evaluate(() => window.__bt)) === undefined, "a log line runs nothing");
  await page.goto(UI + BASE + "/jobs/" + jobs.first);
  assert((await page.locator("#bt-injected").count()) === 0, "no markup from a payload");
  const missing = await page.goto(UI + BASE + "/jobs/999999999");
  assert(missing.status() === 404, "unknown job " + missing.status());
  const bad = await page.goto(UI + BASE + "/jobs/x<y");
  assert(bad.status() === 404, "bad id " + bad.status());
  // The two 404s are logged by Chromium as failed loads.
  const unexpected = problems.slice(since).filter((x) => !/status of 404/.test(x));
  assert(unexpected.length === 0, "errors: " + unexpected.join("; "));
});

await step("jobs: cancel from the table, requeue from the detail page, pause and resume a queue", async () => {
  const since = problems.length;
  await page.goto(UI + BASE + "/jobs?queue=bt-bulk");
  await page.evaluate(() => (window.__noReload = true));
  const row = page.locator(`#jobs-table tr[data-job="${jobs.scanB}"]`);
  await row.locator('button[data-job-action="cancel"]').click();
  await page.locator("#confirm").waitFor({ state: "visible" });
  assert((await page.locator("#confirm-title").textContent()).includes(jobs.scanB), "dialog names the job");
  await page.fill("#confirm-reason", "browser test: cancel");
  await page.click("#confirm-ok");
  await page.locator("#confirm").waitFor({ state: "hidden" });
  await waitFor("row shows cancelled", async () => (await page.locator(`#jobs-table tr[data-job="${jobs.scanB}"]`).getAttribute("data-state")) === "cancelled");
  assert(await page.evaluate(() => window.__noReload === true), "page was reloaded");
  assert((await apiGet("/api/v1/jobs/" + jobs.scanB)).state === "cancelled", "API says cancelled");
  await page.screenshot({ path: `${SHOTS}/jobs-after-cancel.png`, fullPage: true });
  // Requeue it from its page: queued again.
  await page.goto(UI + BASE + "/jobs/" + jobs.scanB);
  const reloaded = page.waitForEvent("framenavigated", { timeout: 15000 });
  await page.click('button[data-job-action="requeue"]');
  await page.click("#confirm-ok");
  await reloaded;
  await waitFor("API says queued", async () => (await apiGet("/api/v1/jobs/" + jobs.scanB)).state === "queued");
  await page.waitForLoadState("load");
  // Pause the queue from its card, then resume it.
  await page.goto(UI + BASE + "/jobs");
  await page.click('.queue-card[data-queue="bt-bulk"] button[data-queue-action="pause"]');
  await page.click("#confirm-ok");
  await waitFor("card shows paused", async () => (await page.locator('.queue-card[data-queue="bt-bulk"] [data-field="paused"]').textContent()).trim() === "paused");
  const stats = await apiGet("/api/v1/queue/stats");
  assert(stats.queues.find((q) => q.queue === "bt-bulk").paused === true, "API says paused");
  const empty = await apiSend("POST", "/internal/worker/claim", { worker_id: "bt-jobworker", queues: ["bt-bulk"], max_jobs: 1 });
  assert(empty.jobs.length === 0, "a paused queue gives nothing");
  await page.click('.queue-card[data-queue="bt-bulk"] button[data-queue-action="resume"]');
  await page.click("#confirm-ok");
  await waitFor("card shows active", async () => (await page.locator('.queue-card[data-queue="bt-bulk"] [data-field="paused"]').textContent()).trim() === "active");
  await noProblems(since);
});

await step("jobs: a read token sees the pages without any control", async () => {
  const made = await apiSend("POST", "/api/tokens", { name: "bt-ui-reader", scope: "read" });
  const reader = await browser.newContext({ httpCredentials: { username: "reader", password: made.secret }, viewport: { width: 1280, height: 900 } });
  try {
    const p = watch(await reader.newPage());
    const since = problems.length;
    await p.goto(UI + BASE + "/jobs");
    assert((await p.locator("body").getAttribute("data-read-only")) === "true", "read-only page");
    assert((await p.locator("#jobs-table tbody tr[data-job]").count()) >= 6, "jobs listed");
    assert((await p.locator("button[data-job-action], button[data-queue-action]").count()) === 0, "no job or queue buttons");
    await p.goto(UI + BASE + "/jobs/" + jobs.deadId);
    assert((await p.locator("[data-job-detail]").count()) === 1, "detail shown");
    assert((await p.locator("button[data-job-action]").count()) === 0, "no buttons on the detail");
    assert(await p.locator('a.btn.keep[href$="/jobs"]').isVisible(), "the way back stays");
    await p.goto(UI + BASE + "/overview");
    assert((await p.locator("#jobs-card").count()) === 1, "jobs card on the overview");
    await p.screenshot({ path: `${SHOTS}/jobs-read-only.png`, fullPage: true });
    await noProblems(since);
  } finally {
    await reader.close();
  }
});

await step("overview: jobs card with totals and a link to the Jobs page", async () => {
  const since = problems.length;
  await page.goto(UI + BASE + "/overview");
  await page.locator("#live.on").waitFor({ timeout: 10000 });
  // Both sides are read on every try: jobs keep moving between one read and
  // the next (the dev cluster's simulated job workers claim and finish theirs).
  let seen = "";
  await waitFor("live jobs totals", async () => {
    const st = await apiGet("/api/v1/queue/stats");
    const dead = Number(await page.locator('[data-k="jobs_dead"]').textContent());
    const running = Number(await page.locator('[data-k="jobs_running"]').textContent());
    seen = `page dead ${dead} running ${running}, API dead ${st.total.length.dead} running ${st.total.length.running}`;
    return dead === st.total.length.dead && running === st.total.length.running;
  }).catch((e) => {
    throw new Error(`${e.message}; ${seen}`);
  });
  assert(Number(await page.locator('[data-k="jobs_queued"]').textContent()) >= 2, "queued total");
  assert((await page.locator("#jobs-dead-stat").getAttribute("class")).includes("bad"), "dead jobs shown as bad");
  await page.click('#jobs-card a[href="/verifier-engine-room/jobs"]');
  await page.waitForURL((u) => u.pathname === BASE + "/jobs");
  await noProblems(since);
});

// ------------------------------------------------------------------ build farm

// The dev cluster's simulated build worker moves builds all the time: every
// check below re-reads the API on each try instead of trusting one read.

await step("builds: cards, both success-rate charts, and the history table", async () => {
  const since = problems.length;
  await waitFor("build events from the simulated worker", async () => (await apiGet("/recent?limit=5")).events.length > 0, 60000, 500);
  await page.goto(UI + BASE + "/builds");
  assert((await page.locator(".sidebar a.active").textContent()).trim() === "Builds", "nav entry");
  for (const k of ["rate_24h", "succeeded_24h", "failed_24h", "queue_depth", "hit_rate", "last_run"]) {
    assert((await page.locator(`#build-cards [data-k="${k}"]`).count()) === 1, "card " + k);
  }
  assert((await page.locator("#build-charts svg.rate-chart").count()) === 2, "two charts");
  assert((await page.locator("#build-charts svg.rate-chart rect.bar").count()) === 24 + 7, "24 hourly and 7 daily bars");
  let seen = "";
  await waitFor("cards agree with /summary", async () => {
    await page.goto(UI + BASE + "/builds");
    const sum = await apiGet("/summary", UI);
    const succeeded = Number(await page.locator('[data-k="succeeded_24h"]').textContent());
    const hits = Number((await page.locator('[data-k="cache_hits"]').textContent()).replace(/,/g, ""));
    seen = `page succeeded ${succeeded} hits ${hits}; API ${sum.last_24h.succeeded} ${sum.cache.hits}`;
    // The page is rendered before this read: the API may be ahead, never behind.
    return succeeded <= sum.last_24h.succeeded && succeeded >= sum.last_24h.succeeded - 3 && hits <= sum.cache.hits && hits > 0;
  }, 20000, 1000).catch((e) => {
    throw new Error(`${e.message}; ${seen}`);
  });
  const rows = await page.locator("#builds-table tbody tr[data-seq]").count();
  assert(rows > 0, "history rows " + rows);
  const seqs = await page.locator("#builds-table tbody tr[data-seq]").evaluateAll((trs) => trs.map((t) => Number(t.dataset.seq)));
  assert(seqs.every((v, i) => i === 0 || seqs[i - 1] > v), "newest first: " + seqs.slice(0, 5));
  await page.screenshot({ path: `${SHOTS}/builds.png`, fullPage: true });
  await noProblems(since);
});

await step("builds: history filters (package, status, dates) and cursor paging", async () => {
  const since = problems.length;
  await page.goto(UI + BASE + "/builds");
  await page.evaluate(() => (window.__noReload = true));
  await page.fill('#build-filters input[name="package"]', "lxml");
  await page.selectOption('#build-filters select[name="status"]', "failed");
  await waitFor("only failed lxml events", async () => {
    const kinds = await page.locator("#builds-table tbody tr[data-seq]").evaluateAll((trs) => trs.map((t) => t.dataset.package + ":" + t.dataset.kind));
    return kinds.length > 0 && kinds.every((k) => k === "lxml:failed" || k === "lxml:retried");
  }, 90000, 1000);
  assert(new URL(page.url()).search.includes("package=lxml"), "the URL keeps the filter: " + page.url());
  assert(await page.evaluate(() => window.__noReload === true), "filtered without a reload");
  // A future day range: nothing.
  await page.fill('#build-filters input[name="since"]', "2099-01-01");
  await waitFor("empty for a future day", async () => (await page.locator("#builds-table tbody tr[data-seq]").count()) === 0);
  // Paging: one row a page, the next page older.
  await page.goto(UI + BASE + "/builds?limit=50");
  const all = await apiGet("/history?limit=2", UI);
  if (all.next_cursor) {
    await page.goto(UI + BASE + "/builds?cursor=" + all.events[0].seq);
    const first = Number(await page.locator("#builds-table tbody tr[data-seq]").first().getAttribute("data-seq"));
    assert(first < all.events[0].seq, `the page from a cursor starts older: ${first} < ${all.events[0].seq}`);
    assert((await page.locator('#build-pager a:has-text("Newest")').count()) === 1, "a link back to the newest");
  }
  // A name the API refuses is its message, on the page.
  await page.goto(UI + BASE + "/builds?package=" + encodeURIComponent("bad name"));
  assert((await page.locator("#history-error").textContent()).includes("package"), "the API's refusal is shown");
  await noProblems(since);
});

await step("builds: the log viewer highlights the seeded hint's line of a failed lxml build", async () => {
  const since = problems.length;
  const ev = await waitFor("an lxml failure that recorded a hint", async () => {
    const h = await apiGet("/history?package=lxml&status=failed&limit=20", UI);
    return h.events.find((e) => e.hints.length > 0);
  }, 90000, 1000);
  const hints = await apiGet("/hints", UI);
  const seeded = hints.hints.find((h) => h.id === ev.hints[0]);
  assert(seeded && /No such file/.test(seeded.pattern), "the event names the seeded hint: " + JSON.stringify(ev.hints));
  // From the history row, follow the version link to the log.
  await page.goto(UI + BASE + "/builds?package=lxml&status=failed");
  await page.locator(`#builds-table a[href="${BASE}/logs/lxml/${ev.version}"]`).first().click();
  await page.waitForURL((u) => u.pathname === `${BASE}/logs/lxml/${ev.version}`);
  const hl = page.locator("#build-log .log-line.hint-line");
  assert((await hl.count()) >= 1, "a highlighted line");
  assert((await hl.first().textContent()).includes("fatal error: libxml/xmlversion.h"), "the header line is the one highlighted");
  assert((await hl.first().getAttribute("data-hints")).split(" ").includes(String(seeded.id)), "it names the hint");
  assert((await page.locator("#log-hints").textContent()).includes("hint #" + seeded.id), "the hint is listed");
  assert((await page.locator("#build-log .log-line:not(.hint-line)").count()) > 0, "other lines are not highlighted");
  await page.screenshot({ path: `${SHOTS}/build-log.png`, fullPage: true });
  // Search inside the log: only matching lines, the match marked.
  await page.fill('#log-search input[name="q"]', "XMLVERSION");
  await Promise.all([page.waitForURL((u) => u.search.includes("q=XMLVERSION")), page.click("#log-search button")]);
  const lines = await page.locator("#build-log .log-line").allTextContents();
  assert(lines.length >= 1 && lines.every((l) => /xmlversion/i.test(l)), "search hits only: " + lines.length);
  assert((await page.locator("#build-log mark").first().textContent()) === "xmlversion", "the match is marked");
  await noProblems(since);
  const missing = await page.goto(UI + BASE + "/logs/lxml/0.0.0-none");
  assert(missing.status() === 404, "no log: " + missing.status());
  // Chromium logs the 404 document itself; nothing else may be logged.
  const unexpected = problems.splice(since).filter((x) => !/404|Failed to load resource/.test(x));
  assert(unexpected.length === 0, "errors: " + unexpected.join("; "));
});

await step("builds: a package page lists its versions with their latest event and log", async () => {
  const since = problems.length;
  await page.goto(UI + BASE + "/builds/lxml");
  const row = page.locator('#versions-table tr[data-version="5.2.2"]');
  assert((await row.count()) === 1, "version row");
  assert((await row.locator("a.log-link").count()) === 1, "log link");
  assert((await page.locator("#package-events tbody tr[data-seq]").count()) > 0, "recent events");
  assert((await page.locator("#package-events .badge.hint").count()) >= 1, "the failures name their hint");
  await noProblems(since);
});

await step("builds: enqueue from the page, then clear the queue through the confirm dialog", async () => {
  const since = problems.length;
  await page.goto(UI + BASE + "/builds");
  await page.fill('#enqueue-form input[name="package"]', "uitest-pkg");
  await page.fill('#enqueue-form input[name="version"]', "0.0.1");
  await page.fill('#enqueue-form input[name="run_id"]', "ui-run");
  await page.click("#enqueue-submit");
  await page.locator(".toast", { hasText: "Queued uitest-pkg 0.0.1" }).waitFor({ timeout: 10000 });
  const h = await waitFor("the queued event", async () => (await apiGet("/history?run_id=ui-run", UI)).events.find((e) => e.kind === "queued"));
  assert(h.package === "uitest-pkg", "queued " + JSON.stringify(h));
  // Clear: a confirm dialog first; Cancel changes nothing.
  await page.click("#queue-clear");
  await page.locator("#confirm").waitFor({ state: "visible" });
  assert((await page.locator("#confirm-title").textContent()).includes("Clear the build queue"), "the dialog says what it does");
  await page.click("#confirm-cancel");
  await page.locator("#confirm").waitFor({ state: "hidden" });
  await apiSend("POST", "/queue/enqueue", { package: "uitest-pkg", version: "0.0.2", run_id: "ui-run" });
  await page.click("#queue-clear");
  await page.click("#confirm-ok");
  const toast = page.locator(".toast", { hasText: "Build queue cleared" });
  await toast.waitFor({ timeout: 10000 });
  assert(/\d+ builds cancelled/.test(await toast.textContent()), "the toast counts them");
  const audit = await apiGet("/api/audit?limit=20");
  const entries = audit.entries || audit.audit || audit;
  assert(JSON.stringify(entries).includes("queue:build"), "the clear is audited");
  await noProblems(since);
});

await step("plan: the latest plan drawn as an SVG graph with nodes and edges", async () => {
  const since = problems.length;
  const plan = await waitFor("a plan posted by the simulated worker", async () => {
    try {
      return await apiGet("/plan", UI);
    } catch (_) {
      return null;
    }
  }, 60000, 1000);
  await page.goto(UI + BASE + "/plan");
  const nodes = page.locator("#plan-graph g.node");
  const n = await nodes.count();
  assert(n === plan.document.packages.length, `one node per package: ${n} vs ${plan.document.packages.length}`);
  const edges = await page.locator("#plan-graph path.edge").count();
  const deps = plan.document.packages.reduce((a, p) => a + p.deps.length, 0);
  assert(edges === deps && edges > 0, `one edge per dependency: ${edges} vs ${deps}`);
  // Dependencies sit above the packages that need them.
  const y = async (name) => Number(await page.locator(`#plan-graph g.node[data-package="${name}"] rect`).getAttribute("y"));
  assert((await y("numpy")) < (await y("pandas")), "numpy above pandas");
  assert((await page.locator('#plan-graph g.node[data-package="lxml"]').getAttribute("class")).includes("st-"), "status colour");
  assert((await page.locator("#plan-version option").count()) >= plan.versions.length, "version picker");
  await page.screenshot({ path: `${SHOTS}/plan.png`, fullPage: true });
  await Promise.all([page.waitForURL((u) => u.pathname === `${BASE}/builds/numpy`), page.locator('#plan-graph g.node[data-package="numpy"]').click()]);
  await noProblems(since);
});

await step("hints: create through the UI, test a pattern, edit, delete", async () => {
  const since = problems.length;
  await page.goto(UI + BASE + "/hints");
  assert((await page.locator("#hints-table tr[data-hint]").count()) >= 1, "the seeded hint is listed");
  // The standalone test box: the farm's syntax, its errors.
  await page.fill('#pattern-test-form input[name="pattern"]', "(?i)LINKER error");
  await page.fill('#pattern-test-form textarea[name="log"]', "ok\nfatal: linker error in foo\nok");
  await page.click("#pattern-test-run");
  await page.locator("#pattern-test-result #hint-test-summary").waitFor();
  assert((await page.locator("#pattern-test-result mark").textContent()) === "linker error", "the match is marked");
  await page.fill('#pattern-test-form input[name="pattern"]', "(unclosed");
  await page.click("#pattern-test-run");
  await page.locator("#pattern-test-result #hint-test-error").waitFor();
  assert((await page.locator("#hint-test-error").textContent()).includes("not a valid regular expression"), "the compiler's error");
  // Create.
  const pattern = "uitest-[0-9]+ exploded";
  await page.click("#hint-create-open");
  await page.fill('#hint-form input[name="pattern"]', pattern);
  await page.fill('#hint-form textarea[name="env"]', "UITEST=1");
  await page.fill('#hint-form textarea[name="requirements"]', "uitest-helper>=1");
  await page.fill('#hint-form textarea[name="note"]', "<b>from the browser test</b>");
  await page.fill('#hint-form textarea[name="log"]', "a\nboom: uitest-42 exploded here\nc");
  await page.click("#hint-test-run");
  await page.locator("#hint-test-result mark").waitFor();
  assert((await page.locator("#hint-test-result mark").textContent()) === "uitest-42 exploded", "tested in the dialog");
  await Promise.all([page.waitForEvent("framenavigated", { timeout: 15000 }), page.click("#hint-save")]);
  await page.waitForLoadState("load");
  const made = await waitFor("the API has it", async () => (await apiGet("/hints", UI)).hints.find((h) => h.pattern === pattern));
  assert(made.recipe.env.UITEST === "1" && made.recipe.extra_requirements[0] === "uitest-helper>=1", "recipe saved: " + JSON.stringify(made.recipe));
  // The page may have been rendered by this follower a moment before it
  // applied the write: reload until it shows it.
  const shows = (check) => waitFor("the page shows it", async () => {
    await page.goto(UI + BASE + "/hints");
    return check();
  }, 10000, 300);
  const row = page.locator(`#hints-table tr[data-hint="${made.id}"]`);
  await shows(async () => (await row.count()) === 1);
  assert((await row.textContent()).includes("<b>from the browser test</b>"), "the note is shown as text");
  // Edit: a bad pattern is refused in the dialog, then a good one saved.
  await row.locator("[data-hint-edit]").click();
  assert((await page.inputValue('#hint-form input[name="pattern"]')) === pattern, "the dialog starts from the hint");
  await page.fill('#hint-form input[name="pattern"]', "uitest-(");
  await page.click("#hint-save");
  await page.locator("#hint-error").waitFor({ state: "visible" });
  assert((await page.locator("#hint-error").textContent()).includes("invalid_hint"), "the API's 400");
  const edited = "uitest-[0-9]+ (exploded|imploded)";
  await page.fill('#hint-form input[name="pattern"]', edited);
  await Promise.all([page.waitForEvent("framenavigated", { timeout: 15000 }), page.click("#hint-save")]);
  await page.waitForLoadState("load");
  await waitFor("edited in the API", async () => (await apiGet("/hints", UI)).hints.find((h) => h.id === made.id).pattern === edited);
  await shows(async () => (await page.locator(`#hints-table tr[data-hint="${made.id}"] .hint-pattern`).textContent()) === edited);
  // Delete, through the confirm dialog.
  await page.locator(`#hints-table tr[data-hint="${made.id}"] [data-hint-delete]`).click();
  await page.locator("#confirm").waitFor({ state: "visible" });
  await Promise.all([page.waitForEvent("framenavigated", { timeout: 15000 }), page.click("#confirm-ok")]);
  await page.waitForLoadState("load");
  await waitFor("gone from the API", async () => !(await apiGet("/hints", UI)).hints.some((h) => h.id === made.id));
  await shows(async () => (await page.locator(`#hints-table tr[data-hint="${made.id}"]`).count()) === 0);
  // The console logs the refused PUT (HTTP 400) as a failed resource load;
  // that one is expected, any other error is not.
  const unexpected = problems.slice(since).filter((p) => !/status of 400/.test(p));
  assert(unexpected.length === 0, "errors: " + unexpected.join("; "));
});

await step("settings: the farm config is shown and saved through PUT /config", async () => {
  const since = problems.length;
  await page.goto(UI + BASE + "/settings");
  await page.locator("#farm-config-form").waitFor();
  await page.selectOption("#farm-strategy", "upgrade");
  await page.fill("#farm-python", "3.12");
  await page.fill("#farm-platform", "manylinux_2_28_x86_64");
  await page.fill("#farm-index", "https://pypi.org/simple");
  await page.fill("#farm-env", "UITEST_FARM=yes\nPIP_NO_CACHE_DIR=1");
  assert((await page.locator("#farm-dirty").textContent()).includes("unsaved"), "changes are marked");
  await Promise.all([page.waitForEvent("framenavigated", { timeout: 15000 }), page.click("#farm-save")]);
  await page.waitForLoadState("load");
  const cfg = await waitFor("the config on the UI's node", async () => {
    const c = await apiGet("/config", UI);
    return c.python === "3.12" ? c : null;
  });
  assert(cfg.strategy === "upgrade" && cfg.platform === "manylinux_2_28_x86_64" && cfg.env.UITEST_FARM === "yes", JSON.stringify(cfg));
  // Rendered again now that this node has applied it (the reload after
  // saving may have come a moment before).
  await page.goto(UI + BASE + "/settings");
  assert((await page.inputValue("#farm-python")) === "3.12" && (await page.inputValue("#farm-strategy")) === "upgrade", "the page shows it");
  // A bad environment line is refused before any call.
  await page.fill("#farm-env", "no equals sign");
  await page.click("#farm-save");
  await waitFor("the banner", async () => (await page.locator("#banner").textContent()).includes("NAME=value"));
  await noProblems(since);
});

// The live view survives its node going away: freeze the follower (SIGSTOP)
// and watch the page move to another node, then thaw it. (The node dying
// outright is the last step, below.)
const pids = Object.fromEntries(
  (process.env.NODE_PIDS || "").split(",").filter(Boolean).map((p) => p.split(":").map(Number)),
);
const followerPid = pids[Number(process.env.FOLLOWER_ID)];
if (followerPid) {
  await step("overview moves to another node when its node stops answering", async () => {
    const since = problems.length;
    await page.goto(UI + BASE + "/overview");
    await page.locator("#live.on").waitFor();
    process.kill(followerPid, "SIGSTOP");
    try {
      await page.waitForURL((u) => u.origin !== UI, { timeout: 30000 });
      await page.locator("#live.on").waitFor({ timeout: 15000 });
      console.log(`     moved from ${UI} to ${new URL(page.url()).origin}`);
    } finally {
      process.kill(followerPid, "SIGCONT");
    }
    // The failed stream to the frozen node is logged by Chromium; nothing else may be.
    const unexpected = problems.slice(since).filter((x) => !/events|ERR_|Failed to load resource/.test(x));
    assert(unexpected.length === 0, "errors: " + unexpected.join("; "));
  });
} else {
  console.log("skip failover step (NODE_PIDS/FOLLOWER_ID not given)");
}

// ------------------------------------------------------------------ scale

async function register(count) {
  const t0 = Date.now();
  const deadline = t0 + 120000;
  let next = 0;
  let errors = 0;
  let registered = 0;
  const failures = [];
  async function lane() {
    while (next < count && Date.now() < deadline) {
      const n = next++;
      const id = "load-" + String(n).padStart(5, "0");
      const body = {
        worker_id: id,
        host: "load-vps-" + (n % 500),
        ip: `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`,
        pool: ["default", "eu-west", "us-east", "bulk"][n % 4],
        version: "1.4.2",
        status: "running",
        process_state: "running",
        metrics: { processed: n * 3, errors: n % 17, in_flight: n % 5 },
        smtp_metrics: { "2xx": n, "4xx": n % 13, "5xx": n % 7 },
      };
      // A worker whose heartbeat fails sends the next one; here at once,
      // at most three times. Every failed attempt is counted and shown.
      for (let attempt = 0; attempt < 3; attempt++) {
        const res = await fetch(API + "/api/workers/heartbeat", {
          method: "POST",
          headers: { authorization: "Bearer " + TOKEN, "content-type": "application/json" },
          body: JSON.stringify(body),
        }).catch((e) => ({ ok: false, status: "fetch error", text: async () => String(e) }));
        if (res.ok) {
          await res.arrayBuffer();
          registered += 1;
          break;
        }
        errors += 1;
        const text = await res.text().catch(() => "");
        if (failures.length < 5) failures.push(`${new Date().toISOString()} ${id}: ${res.status} ${text.slice(0, 200)}`);
      }
    }
  }
  await Promise.all(Array.from({ length: 32 }, lane));
  return { sent: next, registered, errors, failures, ms: Date.now() - t0 };
}

await step(`workers page at ${SCALE} workers: render time`, async () => {
  const since = problems.length;
  const r = await register(SCALE);
  console.log(`     registered ${r.registered} of ${r.sent} workers in ${r.ms} ms (${r.errors} failed attempts)`);
  for (const f of r.failures) console.log(`     failed: ${f}`);
  assert(r.registered === SCALE, "registration incomplete");
  // A retry now and then is a worker's lot; many mean the cluster is unwell.
  assert(r.errors * 100 <= SCALE, `${r.errors} failed heartbeats`);
  await waitFor("follower sees them all", async () => (await apiGet("/api/workers?limit=1", UI)).total >= SCALE, 30000);
  const times = [];
  for (let i = 0; i < 3; i++) {
    const t0 = Date.now();
    await page.goto(UI + BASE + "/workers");
    await page.locator("#workers-table tbody tr[data-worker]").first().waitFor();
    times.push(Date.now() - t0);
  }
  const total = (await page.locator("#worker-total").textContent()).replace(/,/g, "");
  assert(Number(total) >= SCALE, "pager total " + total);
  times.sort((a, b) => a - b);
  console.log(`TIMING workers page at ${total} workers: navigation to table visible, median ${times[1]} ms (runs: ${times.join(", ")} ms)`);
  // Search across all of them (server-side) without a page load.
  let t0 = Date.now();
  await page.fill('input[name="q"]', "load-09999");
  await waitFor("search result", async () => (await page.locator("#workers-table tbody tr[data-worker]").count()) === 1, 10000, 20);
  console.log(`TIMING search over ${total} workers to one row: ${Date.now() - t0} ms`);
  // Paging deep into the list.
  t0 = Date.now();
  await page.goto(UI + BASE + "/workers?offset=9900&limit=100");
  await page.locator("#workers-table tbody tr[data-worker]").first().waitFor();
  console.log(`TIMING workers page at offset 9900: ${Date.now() - t0} ms`);
  t0 = Date.now();
  await page.goto(UI + BASE + "/overview");
  await page.locator("#live.on").waitFor();
  console.log(`TIMING overview at ${total} workers to first live update: ${Date.now() - t0} ms`);
  await page.goto(UI + BASE + "/workers");
  await page.screenshot({ path: `${SHOTS}/workers-10k.png`, fullPage: false });
  assert(times[1] < 5000, "median render under 5 s");
  await noProblems(since);
});

await step("alerts page shows rules with state; ack works when something fires", async () => {
  const since = problems.length;
  await page.goto(UI + BASE + "/alerts");
  assert((await page.locator("#alert-rules tbody tr").count()) >= 5, "rules listed");
  // Make something fire, deterministically: the alert loop checks every
  // second, and a worker reports a provider rejecting 80 % of its probes.
  const open = async () => (await apiGet("/api/incidents?state=active")).incidents.some((i) => !i.acked);
  await apiSend("PUT", "/api/settings", { ALERT_CHECK_INTERVAL_SECONDS: 1 });
  let [accepted, rejected] = [0, 0];
  await waitFor(
    "an active incident",
    async () => {
      accepted += 10;
      rejected += 40;
      await apiSend("POST", "/api/workers/heartbeat", {
        worker_id: "bt-prov", host: "bt-host", ip: "127.0.0.1", pool: "default", version: "1",
        status: "running", process_state: "running", metrics: { processed: 1, errors: 0, in_flight: 0 },
        provider_metrics: { "bt-mail": { accepted, rejected, tempfail: 0, unknown: 0 } },
      });
      return await open();
    },
    40000,
    500,
  );
  await page.goto(UI + BASE + "/alerts");
  const ack = page.locator("[data-ack]").first();
  if ((await ack.count()) > 0) {
    const id = await ack.getAttribute("data-ack");
    await ack.click();
    await page.fill("#confirm-reason", "browser test: looking");
    await page.click("#confirm-ok");
    // The page reloads and then says so in a toast.
    await page.locator(".toast", { hasText: "acknowledged" }).waitFor();
    await waitFor("ack recorded", async () => (await apiGet("/api/incidents")).incidents.find((i) => String(i.id) === id)?.acked);
    console.log(`     acknowledged incident #${id}`);
    await page.screenshot({ path: `${SHOTS}/alerts.png`, fullPage: true });
    // The overview's incident table follows the live stream too.
    await page.goto(UI + BASE + "/overview");
    await page.locator("#live.on").waitFor();
    await page.evaluate(() => (document.querySelector("#incident-rows").innerHTML = ""));
    await waitFor("live incident rows", async () => (await page.locator("#incident-rows .badge").count()) > 0, 10000);
  } else {
    throw new Error("no unacknowledged active incident appeared to acknowledge");
  }
  await noProblems(since);
});

// Last, because it takes the follower down for good: the node the page is
// connected to dies (SIGKILL), and the live view resumes on another node.
if (followerPid) {
  await step("overview resumes on another node when its node is killed", async () => {
    const since = problems.length;
    await page.goto(UI + BASE + "/overview");
    await page.locator("#live.on").waitFor();
    process.kill(followerPid, "SIGKILL");
    await page.waitForURL((u) => u.origin !== UI, { timeout: 30000 });
    await page.locator("#live.on").waitFor({ timeout: 15000 });
    console.log(`     after killing ${UI}: moved to ${new URL(page.url()).origin}`);
    const unexpected = problems.slice(since).filter((x) => !/events|ERR_|Failed to load resource/.test(x));
    assert(unexpected.length === 0, "errors: " + unexpected.join("; "));
  });
}

await browser.close();
console.log(`\nscreenshots in ${SHOTS}`);
if (failures.length) console.log("failed: " + failures.join("; "));
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
