// relayd dashboard: polls the admin JSON API and renders it. No framework, no build step.
// Every value from the API reaches the page through textContent or setAttribute, never as
// HTML: webhooks are written by strangers.
"use strict";

const POLL_MS = 2000;        // how often the page asks the API again
const PAGE_SIZE = 50;        // webhooks shown at first; "Show older" adds as many
const MAX_SHOWN = 500;       // the API's largest page: polling refreshes every row shown
const TOKEN_KEY = "relayd.admin.token";  // sessionStorage: this tab only
// `in_flight` is the API's word for a pending webhook the hub has and has not answered yet.
const STATUS_LABELS = {pending: "pending", in_flight: "in flight", delivered: "delivered",
                       failed: "failed", dead_letter: "dead letter"};

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- formatting

function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }

// Two units at most: 42s, 3m 05s, 5h 02m, 4d 3h.
function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const pad = (n) => String(n).padStart(2, "0");
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function parseTime(iso) { return iso ? new Date(iso) : null; }

function ago(iso) {
  const t = parseTime(iso);
  if (!t) return "–";
  const s = (Date.now() - t.getTime()) / 1000;
  return s < 1 ? "just now" : `${duration(s)} ago`;
}

function until(iso) {
  const t = parseTime(iso);
  if (!t) return "–";
  const s = (t.getTime() - Date.now()) / 1000;
  return s < 1 ? "now" : `in ${duration(s)}`;
}

function clock(iso) {
  const t = parseTime(iso);
  if (!t) return "–";
  const sameDay = t.toDateString() === new Date().toDateString();
  return sameDay ? t.toLocaleTimeString() : t.toLocaleString();
}

function size(bytes) {
  if (bytes == null) return "–";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function requestLine(item) {
  return `${item.method} ${item.path || "/"}${item.query ? "?" + item.query : ""}`;
}

// A status code and an error message as one text, the code once: relay-hub's messages
// already say "HTTP 503 Service Unavailable"; a connection error has no code.
function outcome(code, message) {
  if (!message) return code == null ? "" : `HTTP ${code}`;
  return code == null || message.includes(String(code)) ? message : `${code} ${message}`;
}

function lastResult(item) { return outcome(item.last_status_code, item.last_error); }

// ---------------------------------------------------------------- DOM helpers

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

// Set text only when it changed: rewriting the same text every poll would disturb selection.
function setText(node, text, title) {
  if (node.textContent !== text) node.textContent = text;
  if (title !== undefined && node.title !== title) node.title = title;
}

function badge(node, status) {
  setText(node, STATUS_LABELS[status] || status);
  node.className = `badge ${status}`;
}

// Keep `tbody`'s rows in the order of `items`, reusing each item's row (keyed by id) so a
// poll moves no focus and no selection; `make(item)` builds a row, `update(row, item)` fills it.
function reconcile(tbody, items, rows, make, update) {
  const seen = new Set();
  let cursor = tbody.firstElementChild;
  for (const item of items) {
    seen.add(item.id);
    let row = rows.get(item.id);
    if (!row) { row = make(item); rows.set(item.id, row); }
    update(row, item);
    if (row === cursor) cursor = cursor.nextElementSibling;
    else tbody.insertBefore(row, cursor);
  }
  for (const [id, row] of rows) {
    if (!seen.has(id)) { row.remove(); rows.delete(id); }
  }
}

// ---------------------------------------------------------------- API access

class ApiError extends Error {
  constructor(status, body) {
    const what = body && body.error ? String(body.error) : `HTTP ${status}`;
    super(body && body.reason ? `${what}: ${body.reason}` : what);
    this.status = status;
  }
}

let token = sessionStorage.getItem(TOKEN_KEY);
let tokenWanted = null;  // the pending token prompt, shared by every request that got a 401

// The API answered 401: ask for the token once (however many requests were refused) and
// keep it for this tab.
function askToken(message) {
  if (!tokenWanted) {
    tokenWanted = new Promise((resolve) => {
      const dialog = $("token-dialog");
      const error = $("token-error");
      error.textContent = message;
      error.hidden = !message;
      $("token-input").value = "";
      $("token-form").onsubmit = (event) => {
        event.preventDefault();
        const value = $("token-input").value.trim();
        if (!value) return;
        dialog.close();
        tokenWanted = null;
        resolve(value);
      };
      dialog.showModal();
    });
  }
  return tokenWanted;
}

async function api(path, options = {}) {
  for (;;) {
    const sent = token;
    const headers = {"Accept": "application/json"};
    if (sent) headers["Authorization"] = `Bearer ${sent}`;
    const response = await fetch(path, {...options, headers, cache: "no-store"});
    let body = null;
    try { body = await response.json(); } catch { body = null; }
    if (response.status === 401) {
      if (token === sent) {  // else another request already got a newer token: just retry
        token = await askToken(sent ? "That token was refused." : "");
        sessionStorage.setItem(TOKEN_KEY, token);
      }
      continue;
    }
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }
}

// ---------------------------------------------------------------- status

const endpointRows = new Map();
let hubConnected = false;
let knownEndpoints = [];

function renderStatus(doc) {
  const hub = $("hub");
  hub.dataset.state = doc.connected ? "connected" : "disconnected";
  hubConnected = Boolean(doc.connected);
  setText($("hub-state"), doc.connected ? "connected" : "disconnected");
  const since = parseTime(doc.connected_since);
  setText($("hub-details"), doc.connected
    ? `${doc.hub_id || "?"} from ${doc.peer || "?"} · for ${since ? duration((Date.now() - since) / 1000) : "?"}`
      + ` · last seen ${ago(doc.last_seen_at)}`
    : "", doc.connected ? `connected since ${doc.connected_since}` : "");
  const q = doc.queue || {};
  for (const li of $("queue").children) {
    const key = li.dataset.key;
    const value = key === "oldest"
      ? (q.oldest_pending_age_seconds == null ? "–" : duration(q.oldest_pending_age_seconds))
      : String(q[key] ?? "–");
    setText(li.querySelector(".n"), value);
    li.classList.toggle("alert", (key === "failed" || key === "dead_letter") && q[key] > 0);
  }
  const endpoints = doc.endpoints || [];
  reconcile($("endpoints").tBodies[0], endpoints, endpointRows, makeEndpointRow, updateEndpointRow);
  $("endpoints-empty").hidden = endpoints.length > 0;
  updateEndpointFilter(endpoints.map((e) => e.id));
}

const ENDPOINT_CELLS = ["id", "pending", "in_flight", "failed", "dead_letter", "oldest",
                        "last_delivered", "last_error", "next_attempt", "controls"];
const ENDPOINT_LABELS = ["Endpoint", "Pending", "In flight", "Failed", "Dead letter",
                         "Oldest pending", "Last delivery", "Last error", "Next retry", ""];

function makeEndpointRow(endpoint) {
  const row = el("tr", {"data-id": endpoint.id});
  ENDPOINT_CELLS.forEach((name, i) => {
    const cell = el(i === 0 ? "th" : "td", {"data-label": ENDPOINT_LABELS[i], class: name});
    if (i === 0) cell.setAttribute("scope", "row");
    if (["pending", "in_flight", "failed", "dead_letter"].includes(name)) cell.classList.add("num");
    row.append(cell);
  });
  row.querySelector(".id").append(
    el("span"), el("span", {class: "muted destination"}),
    el("span", {class: "error unserved", text: "not taken by the connected hub", hidden: ""}));
  const error = row.querySelector(".last_error");
  error.append(el("button", {type: "button", class: "link", hidden: "",
                             onclick: () => openDetail(error.dataset.webhook)}),
               el("span", {class: "muted when"}));
  row.querySelector(".controls").append(
    el("button", {type: "button", class: "secondary small", text: "Retry failed",
                  title: "Queue this endpoint's failed and dead-letter webhooks again",
                  onclick: (event) => retryEndpoint(endpoint.id, event.currentTarget)}));
  return row;
}

function updateEndpointRow(row, e) {
  const cell = (name) => row.querySelector(`.${name}`);
  const [name, destination, unserved] = cell("id").children;
  setText(name, e.id);
  setText(destination, e.destination_url || "");
  // a connected hub that does not take this endpoint: why its queue does not move
  unserved.hidden = !(hubConnected && e.hub_serves === false);
  for (const name of ["pending", "in_flight", "failed", "dead_letter"]) {
    setText(cell(name), String(e[name] ?? 0));
  }
  cell("failed").classList.toggle("alert", e.failed > 0);
  cell("dead_letter").classList.toggle("alert", e.dead_letter > 0);
  setText(cell("oldest"), e.oldest_pending_age_seconds == null ? "–"
                                                                : duration(e.oldest_pending_age_seconds));
  setText(cell("last_delivered"), ago(e.last_delivered_at), e.last_delivered_at || "");
  const error = cell("last_error");
  const [link, when] = error.children;
  const last = e.last_error;
  error.dataset.webhook = last ? last.webhook_id : "";
  link.hidden = !last;
  setText(link, last ? outcome(last.status_code, last.message) || "error" : "");
  setText(when, last ? ago(last.at) : "–", last ? last.at : "");
  setText(cell("next_attempt"), e.next_attempt_at ? until(e.next_attempt_at) : "–",
          e.next_attempt_at || "");
  row.querySelector(".controls button").disabled = !(e.failed > 0 || e.dead_letter > 0);
}

function updateEndpointFilter(ids) {
  if (ids.join("\n") === knownEndpoints.join("\n")) return;
  knownEndpoints = ids;
  const select = $("filter-endpoint");
  const current = select.value;
  select.replaceChildren(el("option", {value: "", text: "all"}),
                         ...ids.map((id) => el("option", {value: id, text: id})));
  if (current && !ids.includes(current)) select.append(el("option", {value: current, text: current}));
  select.value = current;
}

// ---------------------------------------------------------------- webhooks list

const webhookRows = new Map();
let shown = PAGE_SIZE;  // how many of the newest webhooks the list asks for
let hasMore = false;

function filters() {
  return {endpoint: $("filter-endpoint").value, status: $("filter-status").value};
}

function listPath() {
  const params = new URLSearchParams({limit: String(shown)});
  const f = filters();
  if (f.endpoint) params.set("endpoint", f.endpoint);
  if (f.status) params.set("status", f.status);
  return `api/webhooks?${params}`;
}

// One request for every row shown (not a cursor per page): a row that moves down as new
// webhooks arrive is never lost between two pages, and every status shown is current.
async function refreshWebhooks() {
  const wanted = listPath();
  const page = await api(wanted);
  if (wanted !== listPath()) return;  // the filters changed meanwhile
  hasMore = page.next != null;
  renderWebhooks(page.webhooks || []);
}

function showOlder() {
  shown = Math.min(shown + PAGE_SIZE, MAX_SHOWN);
  refreshNow();
}

function renderWebhooks(items) {
  reconcile($("webhooks").tBodies[0], items, webhookRows, makeWebhookRow, updateWebhookRow);
  $("webhooks-empty").hidden = items.length > 0;
  $("more").hidden = !hasMore || shown >= MAX_SHOWN;
  if (openId) {
    const item = items.find((w) => w.id === openId);
    if (item && item.status + item.attempts !== openSignature) loadDetail(openId);
  }
}

const WEBHOOK_CELLS = ["received", "endpoint", "request", "status", "attempts", "result", "size"];
const WEBHOOK_LABELS = ["Received", "Endpoint", "Request", "Status", "Attempts", "Last result",
                        "Size"];

function makeWebhookRow(item) {
  const row = el("tr", {class: "clickable", "data-id": item.id,
                        onclick: (event) => {
                          if (!event.target.closest("button")) openDetail(item.id);
                        }});
  WEBHOOK_CELLS.forEach((name, i) => {
    row.append(el("td", {class: name + (name === "attempts" || name === "size" ? " num" : ""),
                         "data-label": WEBHOOK_LABELS[i]}));
  });
  // the keyboard's way in (the row itself is not focusable)
  row.querySelector(".received").append(
    el("button", {type: "button", class: "link", onclick: () => openDetail(item.id)}));
  row.querySelector(".status").append(el("span", {class: "badge"}),
                                       el("span", {class: "muted replay"}));
  return row;
}

function updateWebhookRow(row, w) {
  const cell = (name) => row.querySelector(`.${name}`);
  setText(cell("received").firstElementChild, clock(w.received_at), `${w.id}\n${w.received_at}`);
  setText(cell("endpoint"), w.endpoint_id);
  setText(cell("request"), requestLine(w));
  const [statusBadge, replay] = cell("status").children;
  badge(statusBadge, w.status);
  setText(replay, w.replay_of ? " replay" : "", w.replay_of ? `replay of ${w.replay_of}` : "");
  setText(cell("attempts"), String(w.attempts));
  const next = w.status === "pending" && w.attempts > 0 && w.next_attempt_at
    ? ` · retry ${until(w.next_attempt_at)}` : "";
  setText(cell("result"), lastResult(w) + next);
  cell("result").classList.toggle("error", Boolean(w.last_error) || w.status === "failed"
                                           || w.status === "dead_letter");
  setText(cell("size"), size(w.size));
}

// ---------------------------------------------------------------- detail view

let openId = null;
let openSignature = null;  // status + attempts when the open detail was loaded

async function openDetail(id) {
  if (!id) return;
  openId = id;
  $("action-result").textContent = "";
  const dialog = $("detail");
  if (!dialog.open) dialog.showModal();
  await loadDetail(id);
}

async function loadDetail(id) {
  let w;
  try {
    w = await api(`api/webhooks/${encodeURIComponent(id)}`);
  } catch (error) {
    if (openId === id) setText($("action-result"), error.message);
    return;
  }
  if (openId !== id) return;
  openSignature = w.status + w.attempts;
  renderDetail(w);
}

function fact(term, value, title = "", className = "") {
  return [el("dt", {text: term}), el("dd", {text: value, title, class: className})];
}

function renderDetail(w) {
  setText($("detail-title"), `Webhook ${w.id}`);
  badge($("detail-status"), w.status);
  const retry = retryable(w);
  $("retry").disabled = !retry;
  $("retry").title = retry ? "Send it again, as itself, now"
    : w.status === "delivered" ? "Delivered: Replay sends a copy" : "The hub has it now";
  const facts = [
    ...fact("Endpoint", w.endpoint_id),
    ...fact("Request", requestLine(w)),
    ...fact("Received", clock(w.received_at), w.received_at),
    ...fact("Attempts", String(w.attempts)),
    ...fact("Last attempt", w.last_attempt_at ? `${clock(w.last_attempt_at)} (${ago(w.last_attempt_at)})` : "–",
            w.last_attempt_at || ""),
    ...fact("Next attempt", w.status === "pending" && w.next_attempt_at ? until(w.next_attempt_at) : "–",
            w.next_attempt_at || ""),
    ...fact("Last status", w.last_status_code == null ? "–" : String(w.last_status_code)),
    ...fact("Last error", w.last_error || "–", "", w.last_error ? "error" : ""),
    ...fact("Size", size(w.size)),
  ];
  if (w.replay_of) {
    facts.push(el("dt", {text: "Replay of"}),
               el("dd", {}, el("button", {type: "button", class: "link", text: w.replay_of,
                                          onclick: () => openDetail(w.replay_of)})));
  }
  $("detail-facts").replaceChildren(...facts);
  $("detail-headers").tBodies[0].replaceChildren(
    ...(w.headers || []).map(([name, value]) =>
      el("tr", {}, el("th", {scope: "row", text: name}), el("td", {text: value}))));
  const [kind, text] = bodyView(w);
  setText($("body-kind"), kind);
  $("detail-body").textContent = text;
}

// What the API retries: a failed or dead-letter webhook, or a pending one (its backoff is
// skipped); not one the hub has now (in flight), not a delivered one (replay that).
function retryable(w) {
  return w.status === "failed" || w.status === "dead_letter" || w.status === "pending";
}

// The body as the operator wants to read it: JSON pretty-printed, other text as is,
// binary as base64.
function bodyView(w) {
  const n = w.size ?? 0;
  if (n === 0) return ["(empty)", ""];
  if (w.body_text != null) {
    try {
      return [`JSON, ${size(n)}`, JSON.stringify(JSON.parse(w.body_text), null, 2)];
    } catch {
      return [`text, ${size(n)}`, w.body_text];
    }
  }
  return [`binary, ${size(n)}, base64`, w.body_base64 || ""];
}

async function act(button, path, describe) {
  button.disabled = true;
  setText($("action-result"), "…");
  try {
    const result = await api(path, {method: "POST"});
    setText($("action-result"), describe(result || {}));
    refreshNow();
  } catch (error) {
    setText($("action-result"), error.message);
  } finally {
    button.disabled = false;
  }
}

function retryOpen() {
  const id = openId;
  act($("retry"), `api/webhooks/${encodeURIComponent(id)}/retry`, () => "Queued again.")
    .then(() => { if (openId === id) loadDetail(id); });
}

function replayOpen() {
  act($("replay"), `api/webhooks/${encodeURIComponent(openId)}/replay`,
      (r) => `Replayed as ${(r.queued && r.queued.id) || "a new webhook"}.`);
}

async function retryEndpoint(id, button) {
  button.disabled = true;
  try {
    const r = await api(`api/endpoints/${encodeURIComponent(id)}/retry`, {method: "POST"});
    const n = r && r.count;
    setText($("endpoints-notice"), n == null ? `${id}: queued again`
                                             : `${id}: ${plural(n, "webhook")} queued again`);
    refreshNow();
  } catch (error) {
    setText($("endpoints-notice"), `${id}: ${error.message}`);
  }
}

// ---------------------------------------------------------------- polling

let timer = null;
let running = false;
let again = false;

function showBanner(message) {
  const banner = $("banner");
  setText(banner, message);
  banner.hidden = !message;
}

async function tick() {
  clearTimeout(timer);
  if (running) { again = true; return; }
  if (document.hidden) { timer = setTimeout(tick, POLL_MS); return; }  // refreshed on return
  running = true;
  try {
    // each part shows what it got: the webhooks failing does not blank the hub's state
    const [status, webhooks] = await Promise.allSettled(
      [api("api/status").then(renderStatus), refreshWebhooks()]);
    if (status.status === "rejected") {
      $("hub").dataset.state = "unknown";
      setText($("hub-state"), "unknown");
      setText($("hub-details"), "");
    }
    const errors = [status, webhooks].filter((r) => r.status === "rejected").map((r) =>
      r.reason instanceof ApiError ? r.reason.message : "relayd is not reachable");
    showBanner(errors.length
      ? `${[...new Set(errors)].join("; ")} (retrying every ${POLL_MS / 1000} s)` : "");
    if (status.status === "fulfilled") {
      setText($("updated"), `updated ${new Date().toLocaleTimeString()}`);
    }
  } finally {
    running = false;
    timer = setTimeout(tick, again ? 0 : POLL_MS);
    again = false;
  }
}

function refreshNow() { tick(); }

function filtersChanged() {
  shown = PAGE_SIZE;
  const f = filters();
  const hash = new URLSearchParams(Object.entries(f).filter(([, v]) => v)).toString();
  history.replaceState(null, "", hash ? `#${hash}` : location.pathname + location.search);
  refreshNow();
}

function start() {
  // filters survive a reload through the URL's fragment (#endpoint=alpha&status=failed)
  const saved = new URLSearchParams(location.hash.slice(1));
  if (saved.get("endpoint")) updateEndpointFilter([saved.get("endpoint")]);
  $("filter-endpoint").value = saved.get("endpoint") || "";
  $("filter-status").value = saved.get("status") || "";
  knownEndpoints = [];
  $("filter-endpoint").addEventListener("change", filtersChanged);
  $("filter-status").addEventListener("change", filtersChanged);
  $("filters").addEventListener("submit", (event) => event.preventDefault());
  $("more").addEventListener("click", showOlder);
  $("retry").addEventListener("click", retryOpen);
  $("replay").addEventListener("click", replayOpen);
  $("detail-close").addEventListener("click", () => $("detail").close());
  $("detail").addEventListener("close", () => { openId = null; openSignature = null; });
  // the token is needed to go on: Escape does not close its dialog
  $("token-dialog").addEventListener("cancel", (event) => event.preventDefault());
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshNow(); });
  tick();
}

start();
