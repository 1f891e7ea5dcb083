// The live view: polls /api/frame.jpg at the server's picture rate cap and /api/state twice a second.
// A token in the URL fragment (/live#token=...) is sent as a bearer token; fragments never reach the server.
"use strict";
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const headers = token ? { Authorization: "Bearer " + token } : {};
// Several lanes on one server: /live?lane=NAME shows that lane (the same parameter on every fetch).
const lane = new URLSearchParams(location.search).get("lane");
const query = lane ? "?lane=" + encodeURIComponent(lane) : "";
const $ = (id) => document.getElementById(id);
let fps = 5;
let shown = null;

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
}

async function frameLoop() {
  const t0 = performance.now();
  try {
    const r = await fetch("/api/frame.jpg" + query, { headers, cache: "no-store" });
    if (r.ok) {
      const url = URL.createObjectURL(await r.blob());
      await new Promise((done) => { $("picture").onload = $("picture").onerror = done; $("picture").src = url; });
      if (shown) URL.revokeObjectURL(shown);
      shown = url;
      $("frame").textContent = r.headers.get("X-Frame-Index");
    }
  } catch (e) { $("ready").textContent = "disconnected"; $("ready").className = "bad"; }
  setTimeout(frameLoop, Math.max(10, 1000 / fps - (performance.now() - t0)));
}

function render(s) {
  fps = s.live_fps || fps;
  $("lane").textContent = s.lane;
  $("ready").textContent = s.ready ? "ready" : "not ready";
  $("ready").className = s.ready ? "ok" : "bad";
  $("read").textContent = s.counters.frames_read ?? 0;
  $("processed").textContent = s.counters.frames_processed ?? 0;
  $("dropped").textContent = s.counters.frames_dropped ?? 0;
  const items = $("items");
  items.replaceChildren();
  for (const it of s.items) {
    const row = items.insertRow();
    cell(row, it.track_id);
    cell(row, it.label ?? "…", it.unknown ? "unknown" : "");
    cell(row, it.score == null ? "" : it.score.toFixed(2));
  }
  const events = $("events");
  events.replaceChildren();
  for (const ev of s.events) {
    const li = document.createElement("li");
    const what = ev.track_id == null ? "" : ` #${ev.track_id}`;
    const label = !ev.label ? "" : ev.unknown ? " unknown" : ` ${ev.label} ${Number(ev.score).toFixed(2)}`;
    li.textContent = `${ev.seq ?? ""}  ${ev.type}${what}${label}`;
    events.appendChild(li);
  }
}

async function stateLoop() {
  try {
    const r = await fetch("/api/state" + query, { headers, cache: "no-store" });
    if (r.ok) render(await r.json());
    else { $("ready").textContent = "HTTP " + r.status; $("ready").className = "bad"; }
  } catch (e) { $("ready").textContent = "disconnected"; $("ready").className = "bad"; }
  setTimeout(stateLoop, 500);
}

frameLoop();
stateLoop();
