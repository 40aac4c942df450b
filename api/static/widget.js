// The chat widget: streams replies, shows citations, shows agents' replies live after an
// escalation, and keeps the session across reloads (localStorage).
import { escapeHtml, follow, formatText, readEvents } from "./sse.js";

const root = document.getElementById("sg-chat");
const api = root.dataset.api || "";
const list = root.querySelector(".sg-messages");
const form = root.querySelector(".sg-form");
const input = form.querySelector("textarea");
const banner = root.querySelector(".sg-banner");
const KEY = "supportgraph.session";

let session = JSON.parse(localStorage.getItem(KEY) || "null"); // {session_id, token}
let stream = null; // the session's live events
let inflight = null; // a turn being streamed: {held: [assistant message events]}
const shown = new Set(); // message ids already on screen

const auth = () => (session ? { Authorization: `Bearer ${session.token}` } : {});
const save = (value) => {
  session = value;
  if (value) localStorage.setItem(KEY, JSON.stringify(value));
  else localStorage.removeItem(KEY);
};

const BANNERS = {
  escalated: "A person from our team will reply here. You can keep writing.",
  claimed: "An agent has joined the conversation.",
  active: "You're chatting with the assistant again.",
  resolved: "This conversation is resolved. Write again any time.",
};

function setBanner(kind) {
  banner.hidden = !kind;
  banner.textContent = kind ? BANNERS[kind] : "";
  banner.dataset.kind = kind || "";
}

function bubble(role, text, { pending = false } = {}) {
  const item = document.createElement("li");
  item.className = `sg-msg sg-${role}` + (pending ? " sg-pending" : "");
  item.dataset.role = role;
  const label = { customer: "You", assistant: "Assistant", agent: "Agent" }[role];
  item.innerHTML = `<span class="sg-who">${label}</span><div class="sg-text"></div>`;
  item.querySelector(".sg-text").textContent = text;
  list.append(item);
  list.scrollTop = list.scrollHeight;
  return item;
}

function setCitations(item, citations) {
  item.querySelector(".sg-citations")?.remove();
  if (!citations?.length) return;
  const box = document.createElement("div");
  box.className = "sg-citations";
  box.innerHTML =
    "Sources: " + citations.map((c) => `<span class="sg-cite">${escapeHtml(c.title)}</span>`).join(", ");
  item.append(box);
}

// A message event. While a reply streams in, the bot's own message waits until the stream
// is done, then takes over the streamed bubble (same text) instead of drawing a second one.
function onMessage(data) {
  if (shown.has(data.message_id)) return;
  if (inflight && data.role === "assistant") {
    inflight.held.push(data);
    return;
  }
  render(data);
}

// Draw a message, adopting the bubble this page drew before the server confirmed it.
function render(data) {
  if (shown.has(data.message_id)) return;
  shown.add(data.message_id);
  let item = list.querySelector(`.sg-pending.sg-${data.role}`);
  if (item && data.role !== "agent") {
    item.classList.remove("sg-pending");
  } else {
    item = bubble(data.role, "");
  }
  item.querySelector(".sg-text").innerHTML = formatText(data.content);
  item.dataset.id = data.message_id;
  if (data.role === "assistant") setCitations(item, data.citations);
  list.scrollTop = list.scrollHeight;
}

function onStatus(data) {
  if (data.status === "active") setBanner(data.by === "agent" ? "active" : null);
  else setBanner(data.status);
}

function subscribe() {
  stream?.stop();
  // No Last-Event-ID: the server replays the whole session, then follows it live.
  stream = follow(`${api}/api/support/sessions/${session.session_id}/events`, {
    headers: auth,
    onEvent(event) {
      const data = JSON.parse(event.data);
      if (event.event === "message") onMessage(data);
      else if (event.event === "status") onStatus(data);
      else if (event.event === "claimed") setBanner("claimed");
    },
    onState(state) {
      root.dataset.live = state;
      if (state === "denied") {
        save(null); // expired or revoked: start afresh
        list.innerHTML = "";
        setBanner(null);
      }
    },
  });
}

async function send(text) {
  inflight = { held: [] };
  try {
    await streamTurn(text);
  } finally {
    const held = inflight.held;
    inflight = null;
    held.forEach(render);
  }
}

async function streamTurn(text) {
  const customer = bubble("customer", text, { pending: true });
  let assistant = null;
  const response = await fetch(`${api}/api/support/chat/stream`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "text/event-stream", ...auth() },
    body: JSON.stringify({ message: text, session_id: session?.session_id ?? null }),
  });
  if (response.status === 401 || response.status === 404) {
    customer.remove();
    save(null);
    stream?.stop();
    return streamTurn(text); // the old session is gone: start a new one
  }
  if (!response.ok) {
    // Refused before the stream starts (the message limit, a busy session): say why.
    const refusal = await response.json().catch(() => null);
    if (!refusal?.error?.message) throw new Error(`HTTP ${response.status}`);
    bubble("assistant", refusal.error.message);
    return;
  }
  await readEvents(response, (event) => {
    const data = JSON.parse(event.data);
    if (event.event === "start") {
      const isNew = session?.session_id !== data.session_id;
      save({ session_id: data.session_id, token: data.session_token });
      if (isNew) subscribe();
    } else if (event.event === "delta") {
      assistant ??= bubble("assistant", "", { pending: true });
      assistant.querySelector(".sg-text").textContent += data.text;
      list.scrollTop = list.scrollHeight;
    } else if (event.event === "done") {
      save({ session_id: data.session_id, token: data.session_token }); // a fresh token
      if (assistant) setCitations(assistant, data.citations);
      if (data.status === "escalated" && banner.dataset.kind !== "claimed") setBanner("escalated");
    } else if (event.event === "error") {
      bubble("assistant", data.error.message);
    }
  });
}

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  form.querySelector("button").disabled = true;
  try {
    await send(text);
  } catch (error) {
    bubble("assistant", "Sorry, the message could not be sent. Please try again.");
  } finally {
    form.querySelector("button").disabled = false;
    input.focus();
  }
});

input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    form.requestSubmit();
  }
});

root.querySelector(".sg-new").addEventListener("click", () => {
  stream?.stop();
  save(null);
  list.innerHTML = "";
  shown.clear();
  setBanner(null);
});

if (session) subscribe();
