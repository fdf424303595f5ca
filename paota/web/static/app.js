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
  return when.toLocaleString(undefined, { hour12: false });
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

function taskActions(task, refresh) {
  const actions = [];
  if (FINAL.has(task.status)) {
    actions.push(h("button", { class: "small", "data-action": "retry", onclick: () => retryTask(task.id, refresh) }, "Retry"));
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

function taskRows(items, refresh) {
  if (!items.length) return [h("tr", {}, h("td", { class: "empty", colspan: 10 }, "No tasks match."))];
  return items.map((task) => h("tr", { "data-task-id": task.id },
    h("td", { class: "mono" }, h("a", { href: `#/task/${encodeURIComponent(task.id)}` }, task.id)),
    h("td", {}, task.name),
    h("td", {}, statusBadge(task.status)),
    h("td", {}, task.queue),
    h("td", { class: "num" }, task.attempts),
    h("td", { class: "num" }, task.replays),
    h("td", {}, task.worker),
    h("td", {}, time(task.created_at)),
    h("td", {}, task.progress !== null && !FINAL.has(task.status) ? progressBar(task.progress) : (task.error ? h("span", { class: "error", title: task.error.message }, task.error.type) : "")),
    h("td", {}, taskActions(task, refresh)),
  ));
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
    h("thead", {}, h("tr", {}, ["Id", "Name", "Status", "Queue", "Attempts", "Replays", "Worker", "Created", "Progress / error", ""].map((t, i) => h("th", { class: i === 4 || i === 5 ? "num" : null }, t)))),
    body);
  const pager = h("div", { class: "pager" });
  main.replaceChildren(h("h1", {}, "Tasks"), form, table, pager);

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
      ? h("button", { class: "primary", id: "retry", "data-action": "retry", onclick: () => retryTask(task.id, refresh) }, "Retry")
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
      field("Attempts", String(task.attempts)),
      field("Run (replays)", String(task.replays)),
      field("Worker", task.worker),
      field("Created", time(task.created_at)),
      field("Started", time(task.started_at)),
      field("Finished", time(task.finished_at)),
      field("Updated", time(task.updated_at)),
      field("Progress", task.progress === null ? "" : h("span", {}, progressBar(task.progress), task.progress_message ? ` ${task.progress_message}` : "")),
      field("Workflow", task.workflow_id),
      field("Expires", time(task.expires_at)),
    )),
    h("h2", {}, "Arguments"),
    h("pre", { id: "task-args" }, JSON.stringify(task.args, null, 2)),
  ];
  if (task.status === "SUCCEEDED") parts.push(h("h2", {}, "Result"), h("pre", { id: "task-result" }, JSON.stringify(task.result, null, 2)));
  if (task.error) {
    parts.push(h("h2", {}, "Error"), h("p", { class: "error", id: "task-error" }, `${task.error.type}: ${task.error.message}`));
    if (task.error.traceback) parts.push(h("pre", { id: "task-traceback" }, task.error.traceback));
  }
  container.replaceChildren(...parts);
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

async function workersPage(signal) {
  const body = h("tbody", {});
  main.replaceChildren(h("h1", {}, "Workers"), h("table", { id: "workers" },
    h("thead", {}, h("tr", {}, ["Name", "Host", "PID", "Queues", "Running", "Started", "Last seen", "Succeeded", "Failed"].map((t) => h("th", {}, t)))), body));
  const load = async () => {
    try {
      const page = await api("workers");
      body.replaceChildren(...(page.items.length ? page.items.map((w) => h("tr", {},
        h("td", {}, w.name), h("td", {}, w.host), h("td", {}, w.pid ?? ""),
        h("td", { class: "mono" }, Object.entries(w.queues).map(([q, c]) => `${q}=${c}`).join(", ")),
        h("td", {}, `${w.running ?? "?"}/${w.concurrency ?? "?"}`),
        h("td", {}, time(w.started_at)),
        h("td", { class: w.late ? "error" : null }, time(w.last_seen) + (w.late ? " (late)" : "")),
        h("td", { class: "num" }, w.stats.succeeded ?? ""), h("td", { class: "num" }, w.stats.failed ?? ""),
      )) : [h("tr", {}, h("td", { class: "empty", colspan: 9 }, "No worker has recorded a heartbeat."))]));
    } catch (err) { if (err.status !== 401) body.replaceChildren(h("tr", {}, h("td", { class: "empty error", colspan: 9 }, err.message))); }
  };
  await load();
  every(3000, load, signal);
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
  if (page === "schedules") return schedulesPage(signal);
  return tasksPage(params, signal);
}

window.addEventListener("hashchange", route);
route();
