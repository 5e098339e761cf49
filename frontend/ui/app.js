// The Kumulus web UI: plain JavaScript over the REST API, no framework.
//
// Views, by the address's #fragment:
//   #/login            log in (POST /auth/token)
//   #/jobs             your jobs, updating live (GET /api/jobs)
//   #/submit           the submit form (POST /api/jobs)
//   #/jobs/ID          one job: its record, live logs, files, cancel, delete
//   #/autoscaler       workers over time, waiting jobs, arrivals, decisions
//
// Everything shown comes from the API with the user's own token, so the
// page follows the API's rules: a user sees only their own jobs. Text from
// the server is always set as text, never as markup.
"use strict";

const SESSION_KEY = "kumulus.session";
const STATES = ["queued", "running", "succeeded", "failed", "cancelled", "timed_out"];
const TERMINAL = new Set(["succeeded", "failed", "cancelled", "timed_out"]);
const JOBS_POLL_MS = 2000;
const JOB_POLL_MS = 2000;
const SCALER_POLL_MS = 5000;

// ---- session ---------------------------------------------------------

function session() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    if (s && s.token && s.expires > Date.now()) return s;
  } catch (_) { /* a broken entry is no session */ }
  return null;
}

function saveSession(user, token, expiresIn) {
  const s = { user, token, expires: Date.now() + Math.max(1, expiresIn - 5) * 1000 };
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(s));
  return s;
}

function endSession(message) {
  sessionStorage.removeItem(SESSION_KEY);
  if (message) notice(message, "error");
  go("#/login");
}

// ---- the API -----------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Sends a request with the session's token; answers the parsed JSON (or
// null for an empty answer). A 401 ends the session.
async function api(path, options = {}) {
  const s = session();
  const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
  if (s) headers.Authorization = "Bearer " + s.token;
  let resp;
  try {
    resp = await fetch(path, Object.assign({}, options, { headers }));
  } catch (e) {
    throw new ApiError(0, "unreachable", "cannot reach the server: " + e.message);
  }
  if (resp.status === 401 && s) {
    endSession("Your session has ended: log in again.");
    throw new ApiError(401, "unauthorized", "your session has ended");
  }
  if (!resp.ok) throw await errorOf(resp);
  if (options.raw) return resp;
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

async function errorOf(resp) {
  let code = "http_" + resp.status;
  let message = resp.status + " " + resp.statusText;
  try {
    const body = await resp.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch (_) { /* not JSON: keep the status line */ }
  return new ApiError(resp.status, code, message);
}

// ---- small DOM helpers -------------------------------------------------

// el("tag.class", {attr: value, onclick: fn}, child, "text", ...)
function el(spec, attrs, ...children) {
  const [tag, ...classes] = spec.split(".");
  const node = document.createElement(tag);
  if (classes.length) node.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function notice(text, kind) {
  const n = document.getElementById("notice");
  n.textContent = text || "";
  n.className = kind || "";
}

function badge(state) {
  return el("span.badge.state-" + state, { text: state.replace("_", " ") });
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function secs(value) {
  if (value === null || value === undefined) return "";
  return value < 10 ? value.toFixed(2) + " s" : value.toFixed(1) + " s";
}

function elapsedOf(job) {
  if (job.elapsed_secs !== null && job.elapsed_secs !== undefined) return secs(job.elapsed_secs);
  if (job.started_at && !TERMINAL.has(job.state)) {
    return secs((Date.now() - new Date(job.started_at).getTime()) / 1000) + "…";
  }
  return "";
}

function shortId(id) {
  return id.slice(0, 8) + "…" + id.slice(-4);
}

function newKey() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

// ---- routing -------------------------------------------------------------

let current = null; // the view on screen: {stop()}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function route() {
  if (current && current.stop) current.stop();
  current = null;
  const view = document.getElementById("view");
  view.replaceChildren();
  const hash = location.hash || "#/jobs";
  const s = session();
  const nav = document.getElementById("nav");
  nav.hidden = !s;
  document.getElementById("who").textContent = s ? s.user : "";
  if (!s && hash !== "#/login") {
    go("#/login");
    return;
  }
  const parts = hash.slice(2).split("/");
  for (const a of nav.querySelectorAll("a[data-nav]")) {
    if (a.dataset.nav === parts[0] && parts.length === 1) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (parts[0] === "login") current = loginView(view);
  else if (parts[0] === "submit") current = submitView(view);
  else if (parts[0] === "autoscaler") current = scalerView(view);
  else if (parts[0] === "jobs" && parts[1]) current = jobView(view, decodeURIComponent(parts[1]));
  else current = jobsView(view);
  // Move focus to the new view's heading, for keyboard and screen readers.
  const h = view.querySelector("h1");
  if (h) {
    h.tabIndex = -1;
    h.focus();
  }
}

// Calls fn now and every ms until stopped; never two calls at once.
function every(ms, fn) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    try {
      await fn();
    } catch (e) {
      if (!stopped && e.status !== 401) notice(e.message, "error");
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// ---- login ---------------------------------------------------------------

function loginView(view) {
  const user = el("input", { id: "username", name: "username", autocomplete: "username", required: true });
  const pass = el("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const button = el("button", { type: "submit", text: "Log in" });
  const form = el("form.card", { id: "login-form" },
    el("label", { for: "username", text: "User name" }), user,
    el("label", { for: "password", text: "Password" }), pass,
    button);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    button.disabled = true;
    notice("Logging in…");
    try {
      const resp = await fetch("/auth/token", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ username: user.value, password: pass.value }),
      });
      if (!resp.ok) throw await errorOf(resp);
      const t = await resp.json();
      saveSession(user.value, t.access_token, t.expires_in || 300);
      notice("");
      go("#/jobs");
    } catch (e) {
      notice(e.status === 401 ? "Wrong user name or password." : e.message, "error");
      pass.select();
    } finally {
      button.disabled = false;
    }
  });
  view.append(el("h1", { text: "Log in" }), form);
  user.focus();
  return null;
}

// ---- the jobs table ------------------------------------------------------

function jobsView(view) {
  const filter = el("select", { id: "state-filter" },
    el("option", { value: "", text: "every state" }),
    ...STATES.map((s) => el("option", { value: s, text: s.replace("_", " ") })));
  const tbody = el("tbody", { id: "jobs-body" });
  const empty = el("p.muted", { id: "jobs-empty", hidden: true, text: "No jobs yet. Submit one." });
  const more = el("button", { type: "button", id: "older", hidden: true, text: "Older jobs" });
  const table = el("table", { id: "jobs" },
    el("caption.sr", { text: "Your jobs, newest first" }),
    el("thead", {}, el("tr", {},
      ...["Job", "State", "Repository", "Submitted", "Run time", "Exit"].map((h) => el("th", { scope: "col", text: h })))),
    tbody);
  view.append(
    el("h1", { text: "Jobs" }),
    el("div.toolbar", {},
      el("label", { for: "state-filter", text: "Show" }), filter,
      el("a.button", { href: "#/submit", text: "Submit a job" })),
    table, empty, more);

  let pages = 1; // pages shown; "Older jobs" adds one
  const rows = new Map(); // id -> row, reused so focus survives updates
  const refresh = async () => {
    const jobs = [];
    let cursor = null;
    let next = null;
    for (let i = 0; i < pages; i++) {
      const q = new URLSearchParams({ limit: "50" });
      if (filter.value) q.set("state", filter.value);
      if (cursor) q.set("cursor", cursor);
      const page = await api("/api/jobs?" + q);
      jobs.push(...page.jobs);
      next = page.next_cursor;
      if (!next) break;
      cursor = next;
    }
    more.hidden = !next;
    empty.hidden = jobs.length > 0;
    const seen = new Set();
    let before = tbody.firstChild;
    for (const job of jobs) {
      seen.add(job.id);
      let row = rows.get(job.id);
      if (!row) {
        row = jobRow(job);
        rows.set(job.id, row);
      }
      updateRow(row, job);
      if (row !== before) tbody.insertBefore(row, before);
      else before = before.nextSibling;
    }
    for (const [id, row] of rows) {
      if (!seen.has(id)) {
        row.remove();
        rows.delete(id);
      }
    }
  };
  let stop = every(JOBS_POLL_MS, refresh);
  const restart = () => {
    stop();
    stop = every(JOBS_POLL_MS, refresh);
  };
  filter.addEventListener("change", () => {
    pages = 1;
    restart();
  });
  more.addEventListener("click", () => {
    pages += 1;
    restart();
  });
  return { stop: () => stop() };
}

function jobRow(job) {
  const row = el("tr", { "data-id": job.id },
    el("td", {}, el("a", { href: "#/jobs/" + job.id, text: shortId(job.id), title: job.id })),
    el("td.state"), el("td.repo"), el("td", { text: when(job.submitted_at) }), el("td.elapsed"), el("td.exit"));
  return row;
}

function updateRow(row, job) {
  const [, state, repo, , elapsed, exit] = row.children;
  if (state.dataset.state !== job.state) {
    state.dataset.state = job.state;
    state.replaceChildren(badge(job.state));
  }
  repo.textContent = job.url;
  repo.title = job.args.length ? job.url + " " + job.args.join(" ") : job.url;
  elapsed.textContent = elapsedOf(job);
  exit.textContent = job.exit_code === null || job.exit_code === undefined ? "" : String(job.exit_code);
}

// ---- submit --------------------------------------------------------------

function submitView(view) {
  const url = el("input", { id: "url", name: "url", required: true, placeholder: "https://git.example.com/you/repo.git", spellcheck: "false" });
  const args = el("input", { id: "args", name: "args", placeholder: "hello 'two words'", spellcheck: "false" });
  const config = el("textarea", { id: "config", name: "config", rows: "6", spellcheck: "false", placeholder: '{"greeting": "hi"}' });
  const timeout = el("input", { id: "timeout", name: "timeout", type: "number", min: "1", step: "1", placeholder: "the server's default" });
  const button = el("button", { type: "submit", text: "Submit" });
  const form = el("form.card", { id: "submit-form" },
    el("label", { for: "url", text: "Repository" }), url,
    el("p.hint", { text: "A git URL. Its package.json `start` script runs." }),
    el("label", { for: "args", text: "Arguments" }), args,
    el("p.hint", { text: "One command line, split into words as a shell would (no shell runs it)." }),
    el("label", { for: "config", text: "Config" }), config,
    el("p.hint", { text: "Written to the job's config.json as you type it." }),
    el("label", { for: "timeout", text: "Timeout (seconds)" }), timeout,
    button);
  // One key per filled-in form: a double submit makes one job.
  let key = newKey();
  form.addEventListener("input", () => { key = newKey(); });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { url: url.value.trim() };
    if (args.value.trim()) body.args = args.value;
    if (config.value) body.config = config.value;
    if (timeout.value) body.timeout_secs = Number(timeout.value);
    button.disabled = true;
    notice("Submitting…");
    try {
      const created = await api("/api/jobs", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Idempotency-Key": key },
        body: JSON.stringify(body),
      });
      notice("Job " + created.id + " submitted.", "ok");
      go("#/jobs/" + created.id);
    } catch (e) {
      notice(e.message, "error");
    } finally {
      button.disabled = false;
    }
  });
  view.append(el("h1", { text: "Submit a job" }), form);
  return null;
}

// ---- one job -------------------------------------------------------------

function jobView(view, id) {
  const title = el("h1", {}, "Job ", el("code", { text: id }));
  const facts = el("dl.facts", { id: "job-facts" });
  const actions = el("div.toolbar", { id: "job-actions" });
  const logs = el("pre.logs", { id: "logs", tabindex: "0", "aria-label": "Logs" });
  const logState = el("span.muted", { id: "log-state" });
  const files = el("ul.files", { id: "files" });
  view.append(title, facts, actions,
    el("h2", {}, "Logs ", logState), logs,
    el("h2", { text: "Files" }), files);

  let job = null;
  let stream = null; // AbortController of the log stream
  let stopped = false;
  let poll = () => {};

  const show = (j) => {
    job = j;
    renderFacts(facts, j);
    renderActions(actions, j, {
      cancel: async () => {
        try {
          show(await api("/api/jobs/" + encodeURIComponent(id) + "/cancel", { method: "POST" }));
          notice("Cancelling " + id + ".", "ok");
        } catch (e) {
          notice(e.message, "error");
        }
      },
      remove: async () => {
        if (!confirm("Delete this job and its files?")) return;
        try {
          await api("/api/jobs/" + encodeURIComponent(id), { method: "DELETE" });
          notice("Job " + id + " deleted.", "ok");
          go("#/jobs");
        } catch (e) {
          notice(e.message, "error");
        }
      },
    });
    renderFiles(files, j);
  };

  const follow = async () => {
    while (!stopped) {
      stream = new AbortController();
      logs.replaceChildren();
      const live = !job || !TERMINAL.has(job.state);
      logState.textContent = live ? "(live)" : "";
      let ended = false;
      try {
        const resp = await api("/api/jobs/" + encodeURIComponent(id) + "/logs" + (live ? "?follow=true" : ""), {
          headers: { Accept: "text/event-stream" },
          signal: stream.signal,
          raw: true,
        });
        for await (const ev of events(resp.body)) {
          if (ev.event === "stdout" || ev.event === "stderr") {
            const c = JSON.parse(ev.data);
            appendLog(logs, c.stream || ev.event, c.text);
          } else if (ev.event === "gap") {
            const g = JSON.parse(ev.data);
            appendLog(logs, "gap", "[" + (g.to - g.from) + " bytes of " + g.stream + " not shown live]\n");
          } else if (ev.event === "attempt") {
            const a = JSON.parse(ev.data);
            logs.replaceChildren();
            appendLog(logs, "gap", "[attempt " + a.attempt + " starts over]\n");
          } else if (ev.event === "end") {
            ended = true;
            show(JSON.parse(ev.data));
          }
        }
      } catch (e) {
        if (stopped || e.name === "AbortError") return;
        if (e.status === 404) {
          notice("No such job of yours.", "error");
          return;
        }
      }
      logState.textContent = "";
      if (ended || (job && TERMINAL.has(job.state))) return;
      // The stream broke while the job runs: take it up again shortly.
      await new Promise((r) => setTimeout(r, 1000));
    }
  };

  (async () => {
    try {
      show(await api("/api/jobs/" + encodeURIComponent(id)));
    } catch (e) {
      if (e.status === 404) {
        title.after(el("p.error", { id: "not-found", text: "No such job of yours." }));
        facts.remove();
        return;
      }
      notice(e.message, "error");
    }
    poll = every(JOB_POLL_MS, async () => {
      if (job && TERMINAL.has(job.state)) return;
      show(await api("/api/jobs/" + encodeURIComponent(id)));
    });
    follow();
  })();

  return {
    stop: () => {
      stopped = true;
      poll();
      if (stream) stream.abort();
    },
  };
}

function renderFacts(dl, job) {
  const rows = [
    ["State", badge(job.state)],
    ["Repository", job.url],
    ["Arguments", job.args.length ? job.args.join(" ") : "none"],
    ["Submitted", when(job.submitted_at)],
    ["Started", when(job.started_at)],
    ["Finished", when(job.finished_at)],
    ["Run time", elapsedOf(job)],
    ["Exit code", job.exit_code === null || job.exit_code === undefined ? "" : String(job.exit_code)],
    ["Attempt", String(job.attempt) + (job.worker ? " on " + job.worker : "")],
  ];
  if (job.error) rows.push(["Error", job.error + (job.infrastructure_failure ? " (infrastructure)" : "")]);
  dl.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));
}

// Buttons and links are replaced only when they change, so one a person
// has focused (or is about to click) stays where it is.
function renderActions(box, job, on) {
  const done = TERMINAL.has(job.state);
  const kind = done ? "delete" : "cancel";
  if (box.dataset.kind === kind) return;
  box.dataset.kind = kind;
  box.replaceChildren(
    done
      ? el("button.danger", { type: "button", id: "delete", onclick: on.remove, text: "Delete" })
      : el("button", { type: "button", id: "cancel", onclick: on.cancel, text: "Cancel" }));
}

function renderFiles(list, job) {
  const key = job.state + "\n" + job.files.join("\n");
  if (list.dataset.key === key) return;
  list.dataset.key = key;
  if (!job.files.length) {
    list.replaceChildren(el("li.muted", {
      text: TERMINAL.has(job.state) ? "No files." : "Files appear when the job ends.",
    }));
    return;
  }
  list.replaceChildren(...job.files.map((name) =>
    el("li", {}, el("button.link", {
      type: "button",
      "data-file": name,
      onclick: () => download(job.id, name),
      text: name,
    }))));
}

// Downloads a job's file with the session's token, then saves it.
async function download(id, name) {
  try {
    const path = name.split("/").map(encodeURIComponent).join("/");
    const resp = await api("/api/jobs/" + encodeURIComponent(id) + "/files/" + path, { raw: true });
    const url = URL.createObjectURL(await resp.blob());
    const a = el("a", { href: url, download: name.split("/").pop() });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    notice("Downloaded " + name + ".", "ok");
  } catch (e) {
    notice(e.message, "error");
  }
}

function appendLog(pre, stream, text) {
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  const last = pre.lastChild;
  if (last && last.dataset.stream === stream) last.textContent += text;
  else {
    const span = el("span." + stream, { text });
    span.dataset.stream = stream;
    pre.append(span);
  }
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

// Server-Sent Events from a fetch body: yields {event, data}.
async function* events(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const ev = { event: "message", data: "" };
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
        if (field === "event") ev.event = val;
        else if (field === "data") data.push(val);
      }
      ev.data = data.join("\n");
      if (data.length) yield ev;
    }
  }
}

// ---- the autoscaler ------------------------------------------------------

function scalerView(view) {
  const summary = el("p", { id: "scaler-summary", "aria-live": "polite" });
  const workers = el("figure.chart", { id: "chart-workers" });
  const queue = el("figure.chart", { id: "chart-queue" });
  const load = el("figure.chart", { id: "chart-load" });
  const tbody = el("tbody", { id: "decisions-body" });
  view.append(
    el("h1", { text: "Autoscaler" }),
    summary,
    el("h2", { text: "Workers" }), workers,
    el("h2", { text: "Waiting and running jobs, arrivals" }), queue,
    el("h2", { text: "Observations (/health/load)" }), load,
    el("h2", { text: "Latest decisions" }),
    el("table", { id: "decisions" },
      el("thead", {}, el("tr", {},
        ...["Time", "Workers", "Desired", "Waiting", "Running", "Rule", "Reason"].map((h) => el("th", { scope: "col", text: h })))),
      tbody));

  const stop = every(SCALER_POLL_MS, async () => {
    // One request: the decisions come with the observations /health/load serves.
    const h = await api("/api/autoscaler");
    const d = h.decisions.slice().reverse(); // oldest first, for the charts
    if (!d.length) {
      summary.textContent = "No decision yet: the autoscaler decides once a period.";
    } else {
      const last = h.decisions[0];
      summary.textContent = last.workers + " workers, " + last.desired + " desired, " +
        last.waiting + " waiting, " + last.running + " running (" + new Date(last.timestamp).toLocaleTimeString() + ").";
    }
    drawChart(workers, "Workers current and desired over time", [
      { name: "current", cls: "s1", points: d.map((x) => [x.timestamp, x.workers]) },
      { name: "desired", cls: "s2", points: d.map((x) => [x.timestamp, x.desired]) },
    ]);
    drawChart(queue, "Jobs waiting and running, and arrivals per period", [
      { name: "waiting", cls: "s1", points: d.map((x) => [x.timestamp, x.waiting]) },
      { name: "running", cls: "s2", points: d.map((x) => [x.timestamp, x.running]) },
      { name: "arrivals", cls: "s3", points: d.map((x) => [x.timestamp, x.arrivals]) },
    ]);
    const o = h.observations.slice().reverse();
    drawChart(load, "The seed's observations: arrivals, services, finished per period, mean response time (s)", [
      { name: "arrivals", cls: "s1", points: o.map((x) => [x.timestamp, x.avgRateOfArrival]) },
      { name: "services", cls: "s2", points: o.map((x) => [x.timestamp, x.avgRateOfService]) },
      { name: "finished", cls: "s3", points: o.map((x) => [x.timestamp, x.avgRateOfFinished]) },
      { name: "response (s)", cls: "s4", points: o.map((x) => [x.timestamp, x.avgResponseTime]) },
    ]);
    tbody.replaceChildren(...h.decisions.slice(0, 20).map((x) => el("tr", {},
      el("td", { text: new Date(x.timestamp).toLocaleTimeString() }),
      el("td", { text: String(x.workers) }),
      el("td", { text: String(x.desired) }),
      el("td", { text: String(x.waiting) }),
      el("td", { text: String(x.running) }),
      el("td", { text: x.rule }),
      el("td", { text: x.reason }))));
  });
  return { stop };
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  return n;
}

// A line chart of `series` ([{name, cls, points: [[ms, value]]}]) in `fig`.
function drawChart(fig, caption, series) {
  const W = 720, H = 160, L = 44, R = 10, T = 10, B = 28;
  const all = series.flatMap((s) => s.points);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": caption });
  fig.replaceChildren(chart, el("figcaption", { text: caption }));
  if (!all.length) {
    chart.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis" }, "no data yet"));
    fig.dataset.points = "0";
    return;
  }
  fig.dataset.points = String(all.length);
  const t0 = Math.min(...all.map((p) => p[0]));
  const t1 = Math.max(...all.map((p) => p[0]), t0 + 1000);
  const vmax = Math.max(1, ...all.map((p) => p[1]));
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - v / vmax) * (H - T - B);
  chart.append(
    svg("line", { x1: L, y1: y(0), x2: W - R, y2: y(0), class: "axis" }),
    svg("line", { x1: L, y1: T, x2: L, y2: y(0), class: "axis" }),
    svg("text", { x: L - 6, y: T + 8, "text-anchor": "end", class: "axis" }, fmt(vmax)),
    svg("text", { x: L - 6, y: y(0), "text-anchor": "end", class: "axis" }, "0"),
    svg("text", { x: L, y: H - 8, class: "axis" }, new Date(t0).toLocaleTimeString()),
    svg("text", { x: W - R, y: H - 8, "text-anchor": "end", class: "axis" }, new Date(t1).toLocaleTimeString()));
  series.forEach((s) => {
    if (!s.points.length) return;
    // Steps: a count holds until the next decision.
    let d = "";
    s.points.forEach(([t, v], j) => {
      d += (j === 0 ? "M" : "H" + x(t).toFixed(1) + "V") + (j === 0 ? x(t).toFixed(1) + "," : "") + y(v).toFixed(1);
    });
    chart.append(svg("path", { d, class: "line " + s.cls }));
  });
  fig.insertBefore(el("ul.legend", {}, ...series.map((s) =>
    el("li." + s.cls, {}, el("span.swatch." + s.cls), s.name))), fig.lastChild);
}

function fmt(v) {
  return Number.isInteger(v) ? String(v) : v.toFixed(2);
}

// ---- start -----------------------------------------------------------------

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("logout").addEventListener("click", () => {
    sessionStorage.removeItem(SESSION_KEY);
    notice("Logged out.");
    go("#/login");
  });
  route();
});
