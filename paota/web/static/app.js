// The paota dashboard: plain JavaScript, no build step. Every view reads the management API
// (next to this page, under api/) with the bearer token kept in this tab's sessionStorage; live
// views read its server-sent event streams with fetch (EventSource cannot send the token).
// Everything shown is put into the page as text, never as HTML.
"use strict";

const API = new URL("api/", document.baseURI.split("#")[0]).href;
const STATUSES = ["PENDING", "STARTED", "RETRYING", "SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED"];
const FINAL = new Set(["SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED"]);
const main = document.getElementById("main");
let pageController = null; // aborts the current page's streams and timers when the page changes

// --- small helpers -------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style") el.style.cssText = String(value); // CSSOM: allowed by the CSP
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function token() { return sessionStorage.getItem("paota-token") || ""; }
function authHeaders() { return token() ? { Authorization: `Bearer ${token()}` } : {}; }

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options = {}) {
  // Every request that changes something says it is JSON: a cross-site page cannot send that
  // without CORS (the open mode refuses state changes without it).
  const changes = options.method && options.method !== "GET";
  const headers = { ...authHeaders(), ...(options.body || changes ? { "Content-Type": "application/json" } : {}) };
  const response = await fetch(API + path, { ...options, headers });
  if (response.status === 204) return null;
  let body = null;
  try { body = await response.json(); } catch (err) { body = null; }
  if (!response.ok) {
    const message = body && body.error ? body.error.message : `HTTP ${response.status}`;
    if (response.status === 401) showLogin(message);
    throw new ApiError(response.status, message);
  }
  return body;
}

function notice(text, isError = false) {
  const el = document.getElementById("notice");
  el.textContent = text;
  el.className = isError ? "error" : "";
  el.hidden = !text;
  if (text && !isError) setTimeout(() => { if (el.textContent === text) el.hidden = true; }, 4000);
}

function time(text) {
  if (!text) return "";
  const when = new Date(text);
  if (Number.isNaN(when.getTime())) return text;
  return when.toLocaleString(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3, hour12: false,
  });
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 1) return `${(seconds * 1000).toFixed(seconds < 0.01 ? 2 : 1)} ms`;
  if (seconds < 120) return `${seconds.toFixed(2)} s`;
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

function statusBadge(status) { return h("span", { class: `status ${status}`, "data-status": status }, status); }

function progressBar(progress) {
  if (progress === null || progress === undefined) return "";
  const pct = Math.max(0, Math.min(100, Math.round(progress * 100)));
  return h("span", { title: `${pct}%` }, h("span", { class: "bar" }, h("span", { style: `width:${pct}%` })), ` ${pct}%`);
}

function setLive(on) { document.getElementById("live").classList.toggle("on", on); }

// Server-sent events over fetch, reconnecting after a drop until the page changes.
async function stream(path, onEvent, signal) {
  while (!signal.aborted) {
    try {
      const response = await fetch(API + path, { headers: authHeaders(), signal });
      if (response.status === 401) { showLogin("the token is not valid"); return; }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      setLive(true);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const chunk = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let event = "message";
          const data = [];
          for (const line of chunk.split("\n")) {
            if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
          }
          if (data.length) onEvent(event, JSON.parse(data.join("\n")));
        }
      }
    } catch (err) {
      if (signal.aborted) return;
    }
    setLive(false);
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

// --- sign in -------------------------------------------------------------------------------------

function showLogin(message) {
  if (pageController) pageController.abort();
  setLive(false);
  main.replaceChildren(document.getElementById("login-template").content.cloneNode(true));
  const error = document.getElementById("login-error");
  if (message && token()) { error.textContent = message; error.hidden = false; }
  document.getElementById("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem("paota-token", document.getElementById("token").value.trim());
    try {
      await api("info");
      document.getElementById("logout").hidden = false;
      route();
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    }
  });
}

document.getElementById("logout").addEventListener("click", () => {
  sessionStorage.removeItem("paota-token");
  document.getElementById("logout").hidden = true;
  showLogin("");
});

// --- tasks ---------------------------------------------------------------------------------------

function taskQuery(params) {
  const query = new URLSearchParams();
  for (const key of ["status", "name", "queue", "created_after", "created_before", "cursor"]) {
    if (params.get(key)) query.set(key, params.get(key));
  }
  return query;
}

function againLabel(task) { return task.status === "SUCCEEDED" ? "Run again" : "Retry"; }

function runAgain(task, refresh) {
  // A task that succeeded runs again only when the person says so: its work is done.
  if (task.status === "SUCCEEDED" && !confirm(`${task.name} succeeded already. Run it again, as a new run?`)) return;
  retryTask(task.id, refresh);
}

function taskActions(task, refresh) {
  const actions = [];
  if (FINAL.has(task.status)) {
    actions.push(h("button", { class: "small", "data-action": "retry", onclick: () => runAgain(task, refresh) }, againLabel(task)));
  } else {
    actions.push(h("button", { class: "small danger", "data-action": "cancel", onclick: () => cancelTask(task.id, refresh) }, "Cancel"));
  }
  return actions;
}

async function retryTask(id, refresh) {
  try {
    const answer = await api(`tasks/${encodeURIComponent(id)}/retry`, { method: "POST" });
    notice(`Task ${id} sent again (run ${answer.replays + 1}, ${answer.from === "parked" ? "from its parking queue" : "rebuilt from its record"}).`);
    if (refresh) refresh();
  } catch (err) { notice(err.message, true); }
}

async function cancelTask(id, refresh) {
  try {
    await api(`tasks/${encodeURIComponent(id)}/cancel`, { method: "POST", body: JSON.stringify({ reason: "cancelled from the dashboard" }) });
    notice(`Task ${id} cancelled.`);
    if (refresh) refresh();
  } catch (err) { notice(err.message, true); }
}

function outcomeCell(task) {
  if (task.progress !== null && task.progress !== undefined && !FINAL.has(task.status)) return progressBar(task.progress);
  if (task.error) return h("span", { class: "error", title: `${task.error.type}: ${task.error.message}` }, `${task.error.type}: ${task.error.message}`);
  if (task.result_preview !== null && task.result_preview !== undefined) return h("span", { class: "mono result", title: task.result_preview }, task.result_preview);
  return "";
}

function taskRows(items, refresh) {
  if (!items.length) return [h("tr", {}, h("td", { class: "empty", colspan: 10 }, "No tasks match."))];
  return items.map((task) => h("tr", { "data-task-id": task.id },
    h("td", { class: "mono id" }, h("a", { href: `#/task/${encodeURIComponent(task.id)}`, title: task.id }, task.id)),
    h("td", { class: "mono call", title: task.call || task.name }, task.call || task.name),
    h("td", {}, statusBadge(task.status)),
    h("td", { class: "outcome" }, outcomeCell(task)),
    h("td", { class: "num runtime" }, duration(task.runtime_s)),
    h("td", { class: "num runs", title: `${task.attempts} retr${task.attempts === 1 ? "y" : "ies"} done; run ${task.replays + 1}` }, task.runs ?? task.attempts),
    h("td", {}, task.queue),
    h("td", {}, task.worker),
    h("td", { class: "when" }, time(task.created_at)),
    h("td", {}, taskActions(task, refresh)),
  ));
}

function sendForm() {
  const error = h("p", { class: "error", id: "send-error", hidden: true });
  const names = h("datalist", { id: "task-names" });
  api("info").then((info) => names.replaceChildren(...(info.tasks || []).map((n) => h("option", { value: n })))).catch(() => {});
  const form = h("form", { class: "filters", id: "send-form" },
    h("label", {}, "Task", h("input", { name: "name", list: "task-names", required: true, placeholder: "resize" })),
    h("label", { class: "wide" }, "Arguments (JSON: [values] or {\"name\": value})", h("input", { name: "args", placeholder: '{"path": "a.png", "width": 200}' })),
    h("label", {}, "Queue", h("input", { name: "queue", placeholder: "(the task's)" })),
    h("label", {}, "Delay (s)", h("input", { name: "delay_s", type: "number", min: "0", step: "any" })),
    h("button", { type: "submit", class: "primary" }, "Send"),
    names,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const data = new FormData(form);
    const body = { name: String(data.get("name") || "").trim() };
    const args = String(data.get("args") || "").trim();
    if (args) {
      try { body.args = JSON.parse(args); } catch (err) { error.textContent = `args: not JSON (${err.message})`; error.hidden = false; return; }
    }
    if (data.get("queue")) body.queue = String(data.get("queue")).trim();
    if (data.get("delay_s")) body.delay_s = Number(data.get("delay_s"));
    try {
      const sent = await api("tasks", { method: "POST", body: JSON.stringify(body) });
      notice(`Task ${sent.id} sent to ${sent.queue}.`);
    } catch (err) { error.textContent = err.message; error.hidden = false; }
  });
  return h("details", { class: "send", id: "send" }, h("summary", {}, "Send a task"), form, error);
}

function isoOrEmpty(local) { return local ? new Date(local).toISOString() : ""; }
function localValue(iso) {
  if (!iso) return "";
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${when.getFullYear()}-${pad(when.getMonth() + 1)}-${pad(when.getDate())}T${pad(when.getHours())}:${pad(when.getMinutes())}`;
}

async function tasksPage(params, signal) {
  const form = h("form", { class: "filters", id: "task-filters" },
    h("label", {}, "Search by id", h("input", { name: "search", placeholder: "task_…", value: "" })),
    h("label", {}, "Status", h("select", { name: "status" }, h("option", { value: "" }, "any"),
      STATUSES.map((s) => h("option", { value: s, selected: params.get("status") === s }, s)))),
    h("label", {}, "Name", h("input", { name: "name", value: params.get("name") || "" })),
    h("label", {}, "Queue", h("input", { name: "queue", value: params.get("queue") || "" })),
    h("label", {}, "Created after", h("input", { name: "created_after", type: "datetime-local", value: localValue(params.get("created_after")) })),
    h("label", {}, "Created before", h("input", { name: "created_before", type: "datetime-local", value: localValue(params.get("created_before")) })),
    h("button", { type: "submit", class: "primary" }, "Apply"),
    h("button", { type: "button", onclick: () => { location.hash = "#/tasks"; } }, "Clear"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const search = String(data.get("search") || "").trim();
    if (search) { location.hash = `#/task/${encodeURIComponent(search)}`; return; }
    const query = new URLSearchParams();
    for (const key of ["status", "name", "queue"]) if (data.get(key)) query.set(key, data.get(key));
    for (const key of ["created_after", "created_before"]) if (data.get(key)) query.set(key, isoOrEmpty(data.get(key)));
    location.hash = `#/tasks?${query}`;
  });
  const body = h("tbody", { id: "task-rows" });
  const table = h("table", { id: "tasks" },
    h("thead", {}, h("tr", {}, ["Id", "Task", "Status", "Result / error", "Runtime", "Runs", "Queue", "Worker", "Created", ""].map((t, i) => h("th", { class: i === 4 || i === 5 ? "num" : null }, t)))),
    body);
  const pager = h("div", { class: "pager" });
  main.replaceChildren(h("h1", {}, "Tasks"), sendForm(), form, table, pager);

  const query = taskQuery(params);
  const refresh = async () => {
    try {
      const page = await api(`tasks?${query}`);
      body.replaceChildren(...taskRows(page.items, refresh));
      pager.replaceChildren(
        params.get("cursor") ? h("a", { href: `#/tasks?${(() => { const q = new URLSearchParams(query); q.delete("cursor"); return q; })()}` }, "« newest") : "",
        page.next_cursor ? h("a", { href: `#/tasks?${(() => { const q = new URLSearchParams(query); q.set("cursor", page.next_cursor); return q; })()}`, id: "next-page" }, "older »") : "",
        h("span", {}, `${page.items.length} shown`),
      );
    } catch (err) { if (err.status !== 401) notice(err.message, true); }
  };
  await refresh();
  if (!params.get("cursor")) {
    const live = new URLSearchParams(query);
    stream(`stream/tasks?${live}`, (event, data) => {
      if (event === "tasks" && data.items) body.replaceChildren(...taskRows(data.items, refresh));
    }, signal);
  }
}

function field(name, value) { return [h("dt", {}, name), h("dd", {}, value === "" || value === null || value === undefined ? h("span", { class: "muted" }, "—") : value)]; }

function renderTask(task, container, refresh) {
  const actions = h("div", { class: "actions" },
    FINAL.has(task.status)
      ? h("button", { class: "primary", id: "retry", "data-action": "retry", onclick: () => runAgain(task, refresh) }, againLabel(task))
      : h("button", { class: "danger", id: "cancel", "data-action": "cancel", onclick: () => cancelTask(task.id, refresh) }, "Cancel"),
    FINAL.has(task.status)
      ? h("button", { class: "danger", id: "delete", onclick: async () => {
        if (!confirm(`Delete the record of ${task.id}?`)) return;
        try { await api(`tasks/${encodeURIComponent(task.id)}`, { method: "DELETE" }); notice(`Task ${task.id} deleted.`); location.hash = "#/tasks"; } catch (err) { notice(err.message, true); }
      } }, "Delete")
      : "",
  );
  const parts = [
    h("h1", {}, "Task ", h("span", { class: "mono" }, task.id), " ", statusBadge(task.status)),
    actions,
    h("div", { class: "panel" }, h("dl", { class: "fields", id: "task-fields" },
      field("Name", task.name),
      field("Status", statusBadge(task.status)),
      field("Queue", task.queue),
      field("Runs", `${task.runs ?? task.attempts} (${task.attempts} retr${task.attempts === 1 ? "y" : "ies"} done)`),
      field("Replays", String(task.replays)),
      field("Runtime", duration(task.runtime_s)),
      field("Worker", task.worker),
      field("Created", time(task.created_at)),
      field("Started", time(task.started_at)),
      field("Finished", time(task.finished_at)),
      field("Updated", time(task.updated_at)),
      field("Progress", task.progress === null ? "" : h("span", {}, progressBar(task.progress), task.progress_message ? ` ${task.progress_message}` : "")),
      field("Workflow", task.workflow_id),
      field("Expires", time(task.expires_at)),
    )),
    h("h2", {}, "Call"),
    h("pre", { id: "task-call" }, task.call || task.name),
    h("h2", {}, "Arguments"),
    argsTable(task.args),
  ];
  if (task.status === "SUCCEEDED") parts.push(h("h2", {}, "Result"), h("pre", { id: "task-result" }, JSON.stringify(task.result, null, 2)));
  if (task.error) {
    parts.push(h("h2", {}, "Error"), h("p", { class: "error", id: "task-error" }, `${task.error.type}: ${task.error.message}`));
    if (task.error.traceback) parts.push(h("pre", { id: "task-traceback" }, task.error.traceback));
  }
  container.replaceChildren(...parts);
}

function argsTable(args) {
  if (!Array.isArray(args) || !args.length) return h("p", { class: "muted", id: "task-args" }, "No arguments.");
  return h("table", { id: "task-args", class: "args" },
    h("thead", {}, h("tr", {}, ["Name", "Go type", "Value"].map((t) => h("th", {}, t)))),
    h("tbody", {}, args.map((arg, i) => {
      const named = arg && typeof arg === "object" && ("Value" in arg);
      return h("tr", {},
        h("td", { class: "mono" }, named && arg.Name ? arg.Name : `#${i}`),
        h("td", { class: "mono" }, named ? arg.Type : ""),
        h("td", { class: "mono" }, JSON.stringify(named ? arg.Value : arg)));
    })));
}

async function taskPage(id, signal) {
  const container = h("div", { id: "task" });
  main.replaceChildren(container);
  const refresh = async () => {
    try { renderTask(await api(`tasks/${encodeURIComponent(id)}`), container, refresh); }
    catch (err) { if (err.status !== 401) container.replaceChildren(h("h1", {}, "Task"), h("p", { class: "error" }, err.message)); }
  };
  await refresh();
  stream(`stream/tasks/${encodeURIComponent(id)}`, (event, data) => {
    if (event === "task" && data && data.id) renderTask(data, container, refresh);
  }, signal);
}

// --- parking queues ------------------------------------------------------------------------------

async function parkedPage(queue, params, signal) {
  const reason = params.get("reason") || "";
  const tabs = h("div", { class: "tabs" }, ["failed", "timeout"].map((q) => h("a", { href: `#/parked/${q}`, class: q === queue ? "active" : null }, `${q} queue`)));
  const container = h("div", {});
  main.replaceChildren(h("h1", {}, "Parked messages"), tabs, container);
  const requeue = async (body, what) => {
    try {
      const answer = await api(`parked/${queue}/requeue`, { method: "POST", body: JSON.stringify(body) });
      notice(`${answer.moved} message(s) requeued (${what}).`);
      load();
    } catch (err) { notice(err.message, true); }
  };
  const load = async () => {
    let page;
    try { page = await api(`parked/${queue}?${reason ? `reason=${encodeURIComponent(reason)}&` : ""}limit=200`); }
    catch (err) { if (err.status !== 401) container.replaceChildren(h("p", { class: "error" }, err.message)); return; }
    const chips = h("div", { class: "chips" },
      h("a", { class: `chip ${reason ? "" : "active"}`, href: `#/parked/${queue}` }, `all (${page.total})`),
      Object.entries(page.by_reason).map(([r, n]) => h("a", { class: `chip ${r === reason ? "active" : ""}`, href: `#/parked/${queue}?reason=${encodeURIComponent(r)}` }, `${r} (${n})`)));
    const actions = h("div", { class: "actions" },
      h("button", { class: "primary", id: "requeue-all", disabled: page.total === 0, onclick: () => requeue(reason ? { reason } : {}, reason ? `reason ${reason}` : "all") }, reason ? `Requeue all "${reason}"` : "Requeue all"));
    const rows = page.items.length ? page.items.map((item) => h("tr", { "data-task-id": item.id },
      h("td", { class: "mono" }, item.id ? h("a", { href: `#/task/${encodeURIComponent(item.id)}` }, item.id) : "(no id)"),
      h("td", {}, item.name),
      h("td", {}, item.reason),
      h("td", {}, item.error ? h("span", { class: "error" }, `${item.error.type}: ${item.error.message}`) : ""),
      h("td", {}, item.origin_queue),
      h("td", {}, item.worker),
      h("td", {}, time(item.parked_at)),
      h("td", {}, item.id ? h("button", { class: "small", "data-action": "requeue", onclick: () => requeue({ task_ids: [item.id] }, item.id) }, "Requeue") : ""),
    )) : [h("tr", {}, h("td", { class: "empty", colspan: 8 }, "Nothing parked here."))];
    container.replaceChildren(
      h("p", { class: "muted" }, `Queue ${page.name}: ${page.total} message(s).`),
      chips, actions,
      h("table", { id: "parked" }, h("thead", {}, h("tr", {}, ["Task", "Name", "Reason", "Error", "From queue", "Worker", "Parked at", ""].map((t) => h("th", {}, t)))), h("tbody", {}, rows)));
  };
  await load();
  every(5000, load, signal);
}

// --- queues, workers, schedules ------------------------------------------------------------------

function every(ms, fn, signal) {
  const timer = setInterval(fn, ms);
  signal.addEventListener("abort", () => clearInterval(timer));
}

async function queuesPage(signal) {
  const body = h("tbody", {});
  main.replaceChildren(h("h1", {}, "Queues"), h("table", { id: "queues" },
    h("thead", {}, h("tr", {}, ["Queue", "Kind", "Ready", "Consumers", "Workers (heartbeats)"].map((t, i) => h("th", { class: i >= 2 ? "num" : null }, t)))), body));
  const load = async () => {
    try {
      const page = await api("queues");
      body.replaceChildren(...page.items.map((q) => h("tr", {},
        h("td", { class: "mono" }, q.name), h("td", {}, q.kind),
        h("td", { class: "num" }, q.exists === false ? "—" : q.ready),
        h("td", { class: "num" }, q.consumers === null ? "?" : q.consumers),
        h("td", { class: "num" }, q.workers))));
    } catch (err) { if (err.status !== 401) notice(err.message, true); }
  };
  await load();
  every(2000, load, signal);
}

function workerRows(items) {
  const processes = new Map();
  for (const w of items) processes.set(`${w.name}@${w.host}`, (processes.get(`${w.name}@${w.host}`) || 0) + 1);
  return items.map((w) => h("tr", { "data-worker": w.key },
    h("td", {}, w.name), h("td", {}, w.host), h("td", { class: "num" }, w.pid ?? ""),
    h("td", { class: "num" }, processes.get(`${w.name}@${w.host}`)),
    h("td", { class: "mono" }, Object.entries(w.queues).map(([q, c]) => `${q}=${c}`).join(", ")),
    h("td", { class: "num" }, `${w.running ?? "?"}/${w.concurrency ?? "?"}`),
    h("td", { class: "num processed" }, w.stats.received ?? ""),
    h("td", { class: "num" }, w.stats.succeeded ?? ""),
    h("td", { class: "num" }, w.stats.retried ?? ""),
    h("td", { class: "num" }, w.stats.failed ?? ""),
    h("td", {}, time(w.started_at)),
    h("td", { class: w.late ? "error" : null }, time(w.last_seen) + (w.late ? " (late)" : "")),
  ));
}

const WORKER_COLUMNS = ["Name", "Host", "PID", "Processes", "Queues", "Running", "Processed", "Succeeded", "Retried", "Failed", "Started", "Last heartbeat"];

function noWorkers(page) {
  // RabbitMQ may count consumers that never wrote a heartbeat here: say what a worker needs.
  const why = "A worker appears here when it runs with the same store as this dashboard (PAOTA_STORE=mongodb with the same PAOTA_MONGO_URI and PAOTA_MONGO_DB) and heartbeats on (PAOTA_HEARTBEAT_INTERVAL not 0; the first beat comes when it starts).";
  if (page.store === "MemoryStore") {
    return [h("tr", {}, h("td", { class: "empty", id: "no-workers", colspan: WORKER_COLUMNS.length },
      "This dashboard's store is the in-process memory store, which no worker of another process writes to. Start paota web with the workers' store (PAOTA_STORE=mongodb and the same PAOTA_MONGO_URI and PAOTA_MONGO_DB)."))];
  }
  const text = page.consumers ? `The broker counts ${page.consumers} consumer(s) on the task queues, but none has recorded a heartbeat in this dashboard's store (${page.store}). ${why}` : `No worker has recorded a heartbeat. ${why}`;
  return [h("tr", {}, h("td", { class: "empty", id: "no-workers", colspan: WORKER_COLUMNS.length }, text))];
}

async function workersPage(signal) {
  const body = h("tbody", {});
  main.replaceChildren(h("h1", {}, "Workers"), h("table", { id: "workers" },
    h("thead", {}, h("tr", {}, WORKER_COLUMNS.map((t, i) => h("th", { class: [2, 3, 5, 6, 7, 8, 9].includes(i) ? "num" : null }, t)))), body));
  const load = async () => {
    try {
      const page = await api("workers");
      body.replaceChildren(...(page.items.length ? workerRows(page.items) : noWorkers(page)));
    } catch (err) { if (err.status !== 401) body.replaceChildren(h("tr", {}, h("td", { class: "empty error", colspan: WORKER_COLUMNS.length }, err.message))); }
  };
  await load();
  every(3000, load, signal);
}

// --- monitor: charts of the last hour, hand-made SVG ---------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) if (value !== undefined && value !== null) el.setAttribute(key, String(value));
  for (const child of children.flat()) if (child !== null && child !== undefined) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= value) return m * step;
  return 10 * step;
}

function shortNumber(value) {
  if (value >= 1000) return `${+(value / 1000).toFixed(2)}k`;
  if (value >= 10 || value === 0) return String(Math.round(value));
  return value.toFixed(value >= 1 ? 1 : 2);
}

// One line chart: series [{name, points: [[time ms, value], ...]}] over the window ending now.
function lineChart(id, title, unit, series, windowMs, nowMs) {
  const width = 640, height = 190, left = 48, right = 10, top = 10, bottom = 24;
  const values = series.flatMap((one) => one.points.map((p) => p[1])).filter((v) => v !== null && v !== undefined);
  const max = niceMax(Math.max(0, ...values));
  const start = nowMs - windowMs;
  const x = (t) => left + ((t - start) / windowMs) * (width - left - right);
  const y = (v) => top + (1 - v / max) * (height - top - bottom);
  const grid = [0, 0.5, 1].map((f) => svg("g", { class: "grid" },
    svg("line", { x1: left, x2: width - right, y1: y(max * f), y2: y(max * f) }),
    svg("text", { x: left - 6, y: y(max * f) + 4, "text-anchor": "end" }, shortNumber(max * f))));
  const ticks = [[start, `-${+(windowMs / 60000).toFixed(1)} min`], [start + windowMs / 2, `-${+(windowMs / 120000).toFixed(1)} min`], [nowMs, "now"]]
    .map(([t, label]) => svg("text", { class: "tick", x: x(t), y: height - 6, "text-anchor": t === nowMs ? "end" : t === start ? "start" : "middle" }, label));
  const lines = series.map((one, i) => {
    const points = one.points.filter((p) => p[1] !== null && p[1] !== undefined && p[0] >= start);
    const last = points.length ? points[points.length - 1][1] : null;
    return svg("polyline", {
      class: `series s${i % 8}`, "data-series": one.name, "data-last": last === null ? "" : last,
      "data-count": points.length, "data-positive": points.filter((p) => p[1] > 0).length, points: points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "),
    });
  });
  const total = series.reduce((n, one) => n + one.points.length, 0);
  const legend = h("div", { class: "legend" }, series.map((one, i) => h("span", { class: `key s${i % 8}` }, one.name)));
  return h("figure", { class: "chart panel", id, "data-points": total },
    h("figcaption", {}, title, h("span", { class: "muted" }, ` (${unit})`)),
    svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title }, grid, ticks, lines),
    series.length ? legend : h("p", { class: "muted" }, "No data yet."));
}

function perQueue(samples, key) {
  const names = [...new Set(samples.flatMap((sample) => Object.keys(sample.queues)))].sort();
  return names.map((name) => ({ name, points: samples.filter((sample) => sample.queues[name]).map((sample) => [Date.parse(sample.at), sample.queues[name][key]]) }))
    .filter((one) => one.points.some((p) => p[1] !== null && p[1] !== undefined));
}

function runtimeSeries(samples, queue) {
  return ["p50_ms", "p95_ms", "p99_ms"].map((key) => ({
    name: `${key.slice(0, 3)}${queue ? ` ${queue}` : ""}`,
    points: samples.filter((sample) => sample.queues[queue]).map((sample) => [Date.parse(sample.at), sample.queues[queue][key]]),
  }));
}

async function monitorPage(params, signal) {
  const charts = h("div", { class: "charts", id: "charts" });
  const queuePick = h("select", { id: "runtime-queue" });
  const range = h("select", { id: "monitor-range" },
    [[5, "last 5 minutes"], [15, "last 15 minutes"], [60, "last hour"]].map(([m, label]) => h("option", { value: m, selected: m === Number(params.get("minutes") || 15) }, label)));
  const workers = h("tbody", {});
  const status = h("p", { class: "muted", id: "monitor-status" });
  main.replaceChildren(h("h1", {}, "Monitor"), status,
    h("div", { class: "filters" }, h("label", { class: "inline" }, "Show the ", range), h("label", { class: "inline" }, "runtime percentiles of ", queuePick)), charts,
    h("h2", {}, "Workers"),
    h("table", { id: "monitor-workers" }, h("thead", {}, h("tr", {}, WORKER_COLUMNS.map((t) => h("th", {}, t)))), workers));
  const load = async () => {
    let data;
    try { data = await api("monitor"); } catch (err) { if (err.status !== 401) status.textContent = err.message; return; }
    const samples = data.samples;
    const now = samples.length ? Math.max(Date.now(), Date.parse(samples[samples.length - 1].at)) : Date.now();
    const windowMs = Math.min(data.window_s, Number(range.value) * 60) * 1000;
    const queues = [...new Set(samples.flatMap((sample) => Object.entries(sample.queues).filter(([, q]) => q.runs_per_s > 0).map(([n]) => n)))].sort();
    const chosen = queuePick.value || queues[0] || "";
    queuePick.replaceChildren(...queues.map((q) => h("option", { value: q, selected: q === chosen }, q)));
    status.textContent = `${samples.length} sample(s), one every ${data.interval_s} s, kept for an hour from when this web process started. Rates come from the workers' heartbeats (a worker shows after its first two), depths from the broker.`;
    charts.replaceChildren(
      lineChart("chart-throughput", "Throughput: runs succeeded", "per second", perQueue(samples, "succeeded_per_s"), windowMs, now),
      lineChart("chart-failures", "Failures", "per second", perQueue(samples, "failed_per_s"), windowMs, now),
      lineChart("chart-retries", "Retries", "per second", perQueue(samples, "retried_per_s"), windowMs, now),
      lineChart("chart-runtime", "Runtime percentiles", "ms", chosen ? runtimeSeries(samples, chosen) : [], windowMs, now),
      lineChart("chart-depth", "Queue depth: messages ready", "messages", perQueue(samples, "ready"), windowMs, now),
      lineChart("chart-parked", "Parked messages", "messages",
        ["failed", "timeout"].map((name) => ({ name, points: samples.map((sample) => [Date.parse(sample.at), sample.parked[name] ?? null]) })).filter((one) => one.points.length), windowMs, now),
    );
    try {
      const page = await api("workers");
      workers.replaceChildren(...(page.items.length ? workerRows(page.items) : noWorkers(page)));
    } catch (err) { if (err.status !== 401) workers.replaceChildren(h("tr", {}, h("td", { class: "empty", colspan: WORKER_COLUMNS.length }, err.message))); }
  };
  queuePick.addEventListener("change", load);
  range.addEventListener("change", load);
  await load();
  every(2000, load, signal);
}

async function schedulesPage(signal) {
  const body = h("tbody", {});
  main.replaceChildren(h("h1", {}, "Schedules"), h("table", { id: "schedules" },
    h("thead", {}, h("tr", {}, ["Id", "Task", "Trigger", "Source", "State", "Next", "Last sent", ""].map((t) => h("th", {}, t)))), body));
  const act = async (id, action) => {
    try { await api(`schedules/${encodeURIComponent(id)}/${action}`, { method: "POST" }); notice(`Schedule ${id} ${action}d.`); load(); }
    catch (err) { notice(err.message, true); }
  };
  const load = async () => {
    try {
      const page = await api("schedules");
      body.replaceChildren(...(page.items.length ? page.items.map((s) => h("tr", { "data-schedule-id": s.id },
        h("td", { class: "mono" }, s.id), h("td", {}, s.task),
        h("td", { class: "mono" }, s.trigger.cron ? `${s.trigger.cron} (${s.trigger.tz || "UTC"})` : `every ${s.trigger.every_s ?? s.trigger.every ?? "?"} s`),
        h("td", {}, s.source), h("td", {}, s.paused ? "paused" : "active"),
        h("td", {}, (s.next || []).map(time).join(", ")),
        h("td", {}, time(s.last_slot)),
        h("td", {}, h("button", { class: "small", "data-action": s.paused ? "resume" : "pause", onclick: () => act(s.id, s.paused ? "resume" : "pause") }, s.paused ? "Resume" : "Pause")),
      )) : [h("tr", {}, h("td", { class: "empty", colspan: 8 }, "No schedules."))]));
    } catch (err) { if (err.status !== 401) body.replaceChildren(h("tr", {}, h("td", { class: "empty error", colspan: 8 }, err.message))); }
  };
  await load();
  every(5000, load, signal);
}

// --- routing -------------------------------------------------------------------------------------

async function route() {
  if (pageController) pageController.abort();
  pageController = new AbortController();
  const signal = pageController.signal;
  setLive(false);
  if (!token()) {
    // An open (token-less) server answers without one: try before asking.
    try { await fetch(API + "info").then((r) => { if (!r.ok) throw new Error(); }); }
    catch (err) { showLogin(""); return; }
  } else {
    document.getElementById("logout").hidden = false;
  }
  const hash = location.hash.replace(/^#\/?/, "") || "tasks";
  const [path, search] = hash.split("?");
  const params = new URLSearchParams(search || "");
  const [page, ...rest] = path.split("/");
  for (const link of document.querySelectorAll("header nav a")) {
    link.classList.toggle("active", link.dataset.page === (page === "task" ? "tasks" : page));
  }
  if (page === "task" && rest.length) return taskPage(decodeURIComponent(rest.join("/")), signal);
  if (page === "parked") return parkedPage(rest[0] === "timeout" ? "timeout" : "failed", params, signal);
  if (page === "queues") return queuesPage(signal);
  if (page === "workers") return workersPage(signal);
  if (page === "monitor") return monitorPage(params, signal);
  if (page === "schedules") return schedulesPage(signal);
  return tasksPage(params, signal);
}

window.addEventListener("hashchange", route);
route();
