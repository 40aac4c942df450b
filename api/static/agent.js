// The agent console: sign in with a token, a live queue, one conversation with its hand-off
// packet, and the actions (claim, reply, note, hand back, resolve).
import { escapeHtml, follow, formatText } from "./sse.js";

const $ = (id) => document.getElementById(id);
const KEY = "supportgraph.agentToken";
let token = sessionStorage.getItem(KEY);
let me = null;
let openId = null; // the conversation on screen
let stream = null;
let refreshTimer = null;

async function call(path, { method = "GET", body } = {}) {
  const response = await fetch(path, {
    method,
    headers: {
      Authorization: `Bearer ${token}`,
      ...(body ? { "Content-Type": "application/json" } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) {
    const error = new Error(data?.error?.message || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

function toast(message) {
  const box = $("toast");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(box.timer);
  box.timer = setTimeout(() => (box.hidden = true), 5000);
}

const when = (iso) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

// --- sign in -------------------------------------------------------------------------------

async function signIn(candidate) {
  token = candidate;
  try {
    me = await call("/api/agent/me");
  } catch (error) {
    token = null;
    sessionStorage.removeItem(KEY);
    $("sign-in-error").textContent = `Sign-in failed: ${error.message}`;
    $("sign-in-error").hidden = false;
    return;
  }
  sessionStorage.setItem(KEY, token);
  $("who").textContent = `${me.name} (${me.role})`;
  $("sign-in").hidden = true;
  $("console").hidden = false;
  $("sign-out").hidden = false;
  const first = await loadQueue();
  startStream(first.last_event_id);
}

$("sign-in").addEventListener("submit", (e) => {
  e.preventDefault();
  signIn($("token").value.trim());
});

$("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  location.reload();
});

// --- queue -----------------------------------------------------------------------------------

let queueRequest = 0;

async function loadQueue() {
  const mine = ++queueRequest;
  const filter = $("filter").value;
  const query = new URLSearchParams({ limit: "50" });
  if (filter === "escalated") query.set("status", "escalated");
  if (filter === "mine") query.set("claimed_by", me.name);
  const page = await call(`/api/agent/sessions?${query}`);
  if (mine !== queueRequest) return page; // a newer refresh is on its way
  const list = $("queue");
  list.innerHTML = "";
  for (const item of page.items) {
    const li = document.createElement("li");
    li.className = "queue-item" + (item.session_id === openId ? " open" : "");
    li.dataset.session = item.session_id;
    li.innerHTML = `
      <div class="row"><span class="badge ${item.status}">${item.status}</span>
        <span class="muted">${when(item.updated_at)}</span></div>
      <div class="reason">${escapeHtml(item.escalation_reason || item.intent || "")}</div>
      <div class="last">${escapeHtml(item.last_message || "")}</div>
      <div class="muted">${item.claimed_by ? `claimed by ${escapeHtml(item.claimed_by)}` : "unclaimed"}</div>`;
    li.addEventListener("click", () => openConversation(item.session_id));
    list.append(li);
  }
  $("queue-empty").hidden = page.items.length > 0;
  return page;
}

$("filter").addEventListener("change", loadQueue);

function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => loadQueue().catch((e) => toast(e.message)), 150);
}

// --- live updates ----------------------------------------------------------------------------

function startStream(lastEventId) {
  stream?.stop();
  stream = follow("/api/agent/events", {
    headers: () => ({ Authorization: `Bearer ${token}` }),
    lastEventId,
    onEvent(event) {
      if (event.event === "ready") return;
      const data = JSON.parse(event.data);
      refreshSoon();
      if (data.session_id === openId) renderLive(event.event, data);
    },
    onState(state) {
      $("live").dataset.state = state;
      $("live").textContent = state === "open" ? "● live" : state;
    },
  });
}

// Append what an event adds to the open conversation (the rest is reloaded).
function renderLive(kind, data) {
  if (kind === "message" && !document.querySelector(`#transcript [data-id="${data.message_id}"]`)) {
    addMessage({ id: data.message_id, role: data.role, content: data.content, author: data.author, created_at: data.created_at });
  } else if (kind === "note" && !document.querySelector(`#notes [data-id="${data.note_id}"]`)) {
    addNote({ id: data.note_id, author: data.author, content: data.content, created_at: data.created_at });
  } else if (kind === "status" || kind === "claimed" || kind === "released") {
    openConversation(openId);
  }
}

// --- one conversation ------------------------------------------------------------------------

function addMessage(m) {
  const li = document.createElement("li");
  li.className = `msg ${m.role}`;
  li.dataset.id = m.id;
  li.dataset.role = m.role;
  const who = m.role === "agent" ? `agent ${m.author || ""}` : m.role;
  li.innerHTML = `<span class="who">${escapeHtml(who)} · ${when(m.created_at)}</span>
    <div class="text"></div>`;
  li.querySelector(".text").innerHTML = formatText(m.content);
  $("transcript").append(li);
  $("transcript").scrollTop = $("transcript").scrollHeight;
}

function addNote(n) {
  const li = document.createElement("li");
  li.dataset.id = n.id;
  li.innerHTML = `<span class="who">${escapeHtml(n.author)} · ${when(n.created_at)}</span>
    <div class="text"></div>`;
  li.querySelector(".text").textContent = n.content;
  $("notes").append(li);
}

function renderPacket(conv) {
  const p = conv.escalation;
  const rows = [];
  const add = (label, html) => rows.push(`<dt>${label}</dt><dd>${html}</dd>`);
  if (p) {
    add("Reason", `${escapeHtml(p.reason)}${p.detail ? ` — ${escapeHtml(p.detail)}` : ""}`);
    add("Summary", escapeHtml(p.summary));
    add("Intent", escapeHtml(p.intent || "unknown"));
    const slots = Object.entries(p.slots || {});
    add("Collected", slots.length ? slots.map(([k, v]) => `${escapeHtml(k)}: <code>${escapeHtml(v)}</code>`).join("<br>") : "nothing");
    add("Tried", (p.tried || []).length ? p.tried.map(escapeHtml).join("<br>") : "nothing yet");
    add("Escalated", when(p.at));
  } else {
    add("Hand-off", "none (the bot has this conversation)");
  }
  if (conv.customer_id) add("Customer", escapeHtml(conv.customer_id));
  $("packet").innerHTML = rows.join("");
}

async function openConversation(id) {
  openId = id;
  const conv = await call(`/api/agent/sessions/${id}`);
  if (openId !== id) return;
  $("conversation").hidden = false;
  $("conv-title").textContent = `Conversation ${id.slice(0, 8)}…`;
  $("conv-status").textContent = conv.status;
  $("conv-status").className = `badge ${conv.status}`;
  $("conv-claim").textContent = conv.claimed_by ? `claimed by ${conv.claimed_by}` : "unclaimed";
  const escalated = conv.status === "escalated";
  $("claim").disabled = !escalated || conv.claimed_by === me.name;
  $("claim").textContent = conv.claimed_by && conv.claimed_by !== me.name ? "Take over" : "Claim";
  $("hand-back").disabled = !escalated;
  $("resolve").disabled = !escalated;
  $("reply-form").querySelector("button").disabled = !escalated;
  $("transcript").innerHTML = "";
  conv.messages.forEach(addMessage);
  $("notes").innerHTML = "";
  conv.notes.forEach(addNote);
  renderPacket(conv);
  document.querySelectorAll(".queue-item").forEach((li) => li.classList.toggle("open", li.dataset.session === id));
}

async function act(path, body) {
  try {
    await call(`/api/agent/sessions/${openId}/${path}`, { method: "POST", body });
    await openConversation(openId);
    refreshSoon();
    return true;
  } catch (error) {
    toast(error.message);
    return false;
  }
}

$("claim").addEventListener("click", () => {
  const force = $("claim").textContent === "Take over" ? "?force=true" : "";
  act(`claim${force}`);
});
$("hand-back").addEventListener("click", () => act("hand-back"));
$("resolve").addEventListener("click", () => act("resolve"));

$("reply-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("reply").value.trim();
  if (text && (await act("reply", { text }))) $("reply").value = "";
});

$("note-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("note").value.trim();
  if (text && (await act("notes", { text }))) $("note").value = "";
});

if (token) signIn(token);
