// Server-Sent Events over fetch(): unlike EventSource it can send an Authorization header.
// Used by both pages for POST /api/support/chat/stream and for the live event streams.

/** Parse an SSE response body, calling onEvent({event, data, id}) for each event. */
export async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { event: "message", data: [], id: null };
  const dispatch = () => {
    if (event.data.length) {
      onEvent({ event: event.event, data: event.data.join("\n"), id: event.id });
    }
    event = { event: "message", data: [], id: null };
  };
  const line = (text) => {
    if (text === "") return dispatch();
    if (text.startsWith(":")) return; // a comment: the server's heartbeat
    const colon = text.indexOf(":");
    const field = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? "" : text.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") event.data.push(value);
    else if (field === "event") event.event = value;
    else if (field === "id") event.id = value;
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    for (;;) {
      const match = /\r\n|\r|\n/.exec(buffer);
      if (!match) break;
      // A lone "\r" at the end may be the first half of "\r\n": wait for more.
      if (match[0] === "\r" && match.index === buffer.length - 1) break;
      line(buffer.slice(0, match.index));
      buffer = buffer.slice(match.index + match[0].length);
    }
  }
}

/**
 * Follow an event stream until stop(): reconnects after errors with Last-Event-ID, so no
 * event is missed. headers() is called on every (re)connect, so a rotated token is used.
 */
export function follow(url, { headers, lastEventId = null, onEvent, onState }) {
  let last = lastEventId;
  let stopped = false;
  const abort = new AbortController();
  (async () => {
    let delay = 500;
    while (!stopped) {
      try {
        const sent = { ...headers(), Accept: "text/event-stream" };
        if (last !== null) sent["Last-Event-ID"] = String(last);
        const response = await fetch(url, { headers: sent, signal: abort.signal });
        if ([401, 403, 404].includes(response.status)) {
          onState?.("denied", response.status);
          return;
        }
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        onState?.("open");
        delay = 500;
        await readEvents(response, (event) => {
          if (event.id !== null) last = event.id;
          onEvent(event);
        });
      } catch (error) {
        if (stopped) return;
      }
      onState?.("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 10000);
    }
  })();
  return {
    stop() {
      stopped = true;
      abort.abort();
    },
  };
}

/** Escape text for innerHTML. */
export function escapeHtml(text) {
  return String(text).replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c],
  );
}

/** Escaped text with the replies' one piece of Markdown, **bold**, shown as bold. */
export function formatText(text) {
  return escapeHtml(text).replace(/\*\*(.+?)\*\*/g, "<strong>$1</strong>");
}
