// facegate console: cameras, the latest best faces per camera (live), one event in detail.
// Plain JavaScript, no build step. Every text from the server goes in with textContent
// (never as HTML). URLs are relative, so the page also works behind a reverse proxy's sub-path.
"use strict";

const FACES_PER_CAMERA = 12;
const CAMERA_REFRESH_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
const rel = (path) => "." + path; // "/api/…" from the API → "./api/…" under this page
const strips = new Map(); // camera → {section, list, tiles: Map(event_id → tile)}
const events = new Map(); // entry_id → event (what the tiles show)
let gateInfo = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function clock(ts) {
  return ts ? new Date(ts * 1000).toLocaleTimeString() : "–";
}

function notice(text) {
  const box = $("notice");
  box.textContent = text || "";
  box.hidden = !text;
}

async function api(path, options = {}) {
  const response = await fetch("./" + path, {credentials: "same-origin", ...options});
  if (response.status === 401) {
    notice("This console needs its token: open it once as …/?token=YOUR_TOKEN");
    throw new Error("unauthorized");
  }
  return response;
}

async function apiJson(path) {
  const response = await api(path);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

// ---- quality bands -------------------------------------------------------------------------

function bandOf(event) {
  return event.band || "none";
}

function qualityText(event) {
  return event.band ? `${event.quality.toFixed(1)} ${event.band}` : event.quality.toFixed(1);
}

function showBands(info) {
  const box = $("bands");
  box.replaceChildren();
  if (info.bands.length) {
    box.append(el("span", {class: "muted", text: `quality bands (${info.recognizer}, FNMR at FMR ${info.fmr}):`}));
    for (const band of info.bands) {
      const range = band.name === "poor" ? `< ${info.bands[info.bands.length - 2].min_quality}` : `≥ ${band.min_quality}`;
      const title = `rejecting below ${band.min_quality}: FNMR ${band.fnmr}, ${(band.discarded * 100).toFixed(0)}% of faces discarded`;
      box.append(el("span", {class: `band band-${band.name}`, title, text: `${band.name} ${range}`}));
    }
  }
  if (info.min_quality !== null) box.append(el("span", {class: "band band-min", text: `min_quality ${info.min_quality}`}));
  box.hidden = !box.childElementCount;
}

// ---- cameras -------------------------------------------------------------------------------

const cards = new Map(); // camera → card

function cameraCard(name) {
  const card = el("article", {class: "card", "data-camera": name});
  const head = el("header", {}, el("h3", {text: name}), el("span", {class: "state"}));
  const facts = el("dl");
  for (const [key, label] of [["fps", "fps"], ["decoder", "decoder"], ["worker", "worker"], ["last_event", "last event"], ["url", "url"]]) {
    facts.append(el("dt", {text: label}), el("dd", {"data-field": key}));
  }
  const error = el("p", {class: "error last-error"});
  const detach = el("button", {type: "button", class: "detach", text: "detach"});
  detach.addEventListener("click", () => detachCamera(name, detach));
  card.append(head, facts, error, detach);
  return card;
}

function updateCard(card, camera) {
  const state = card.querySelector(".state");
  state.textContent = camera.stale ? `${camera.state} (stale)` : camera.state;
  card.dataset.state = camera.stale ? "stale" : camera.state;
  const values = {
    fps: camera.fps === null ? "–" : camera.fps.toFixed(1), decoder: camera.decoder || "–",
    worker: camera.worker || "–", last_event: clock(camera.last_event_ts), url: camera.url || "–",
  };
  for (const [key, value] of Object.entries(values)) card.querySelector(`[data-field="${key}"]`).textContent = value;
  card.querySelector(".last-error").textContent = camera.last_error;
  card.querySelector(".detach").hidden = camera.source !== "registry";
}

function showCameras(cameras) {
  const box = $("cameras");
  const names = new Set(cameras.map((c) => c.name));
  for (const [name, card] of cards) if (!names.has(name)) { card.remove(); cards.delete(name); }
  box.querySelector(".empty")?.remove();
  for (const camera of cameras) {
    let card = cards.get(camera.name);
    if (!card) { card = cameraCard(camera.name); cards.set(camera.name, card); }
    updateCard(card, camera);
    box.append(card); // keeps the server's order (by name)
  }
  if (!cameras.length) box.replaceChildren(el("p", {class: "muted empty", text: "no cameras yet"}));
}

let refreshing = null;
async function refreshCameras() {
  if (refreshing) return refreshing;
  refreshing = apiJson("api/cameras").then(showCameras).catch((err) => console.warn(err)).finally(() => { refreshing = null; });
  return refreshing;
}

async function detachCamera(name, button) {
  if (button.dataset.armed !== "1") { // two clicks: a slip of the finger does not stop a camera
    button.dataset.armed = "1";
    button.textContent = "really detach?";
    setTimeout(() => { button.dataset.armed = ""; button.textContent = "detach"; }, 4000);
    return;
  }
  const response = await api(`api/cameras/${encodeURIComponent(name)}`, {method: "DELETE"});
  if (!response.ok && response.status !== 404) notice(`detach ${name}: HTTP ${response.status}`);
  await refreshCameras();
}

async function attachCamera(form) {
  const error = $("attach-error");
  error.textContent = "";
  const body = Object.fromEntries(new FormData(form).entries());
  const response = await api("api/cameras", {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  });
  if (response.ok) {
    form.reset();
    await refreshCameras();
    return;
  }
  const reply = await response.json().catch(() => ({}));
  const detail = Array.isArray(reply.detail) ? reply.detail.map((d) => `${d.loc.slice(1).join(".")}: ${d.msg}`).join("; ") : reply.detail;
  error.textContent = detail || `HTTP ${response.status}`;
}

// ---- best faces ----------------------------------------------------------------------------

function stripOf(camera) {
  let strip = strips.get(camera);
  if (!strip) {
    $("strips").querySelector(".empty")?.remove();
    const list = el("ol", {class: "faces"});
    const section = el("section", {class: "strip", "data-camera": camera}, el("h3", {text: camera}), list);
    const after = [...strips.keys()].sort().find((name) => name > camera);
    $("strips").insertBefore(section, after ? strips.get(after).section : null);
    strip = {section, list, tiles: new Map()};
    strips.set(camera, strip);
  }
  return strip;
}

function faceTile(event) {
  const face = el("img", {alt: `face of track ${event.track}`, width: "112", height: "112", loading: "lazy"});
  if (event.face_url) face.src = rel(event.face_url);
  const label = `${event.camera} track ${event.track}, quality ${qualityText(event)}`;
  const button = el("button", {type: "button", class: "face", "aria-label": label}, face,
    el("span", {class: "quality", text: qualityText(event)}),
    el("span", {class: "meta", text: `#${event.track} · ${clock(event.ts)} · ${event.type}`}));
  button.addEventListener("click", () => openEvent(events.get(button.dataset.entry)));
  const tile = el("li", {class: `tile band-${bandOf(event)}`}, button);
  if (event.below_min_quality) {
    tile.classList.add("below");
    button.append(el("span", {class: "meta", text: "below min_quality"}));
  }
  button.dataset.entry = event.entry_id;
  tile.dataset.entry = event.entry_id;
  tile.dataset.event = event.event_id;
  return tile;
}

function addEvent(event) {
  if (events.has(event.entry_id)) return;
  events.set(event.entry_id, event);
  const strip = stripOf(event.camera);
  const previous = strip.tiles.get(event.event_id); // one tile per track: its newest event
  if (previous) { events.delete(previous.dataset.entry); previous.remove(); }
  const tile = faceTile(event);
  strip.tiles.set(event.event_id, tile);
  strip.list.prepend(tile);
  while (strip.list.children.length > FACES_PER_CAMERA) {
    const last = strip.list.lastElementChild;
    strip.tiles.delete(last.dataset.event);
    events.delete(last.dataset.entry);
    last.remove();
  }
}

// ---- one event -----------------------------------------------------------------------------

function openEvent(event) {
  if (!event) return;
  $("event-title").textContent = `${event.camera} · track ${event.track} · ${event.type}`;
  const frame = $("event-frame");
  const overlay = $("event-overlay");
  overlay.replaceChildren();
  frame.hidden = !event.frame_url;
  overlay.hidden = !event.frame_url;
  $("event-noframe").hidden = Boolean(event.frame_url);
  if (event.frame_url) {
    frame.src = rel(event.frame_url);
    // The box and landmarks are in source pixels; the frame image is downscaled: a viewBox in source
    // pixels stretched over the image puts them in place at any displayed size.
    overlay.setAttribute("viewBox", `0 0 ${event.frame_w} ${event.frame_h}`);
    const [x1, y1, x2, y2] = event.bbox;
    const box = document.createElementNS(SVG, "rect");
    for (const [k, v] of Object.entries({x: x1, y: y1, width: x2 - x1, height: y2 - y1})) box.setAttribute(k, v);
    box.setAttribute("class", `box band-${bandOf(event)}`);
    overlay.append(box);
    for (const [x, y] of event.landmarks) {
      const dot = document.createElementNS(SVG, "circle");
      dot.setAttribute("cx", x); dot.setAttribute("cy", y); dot.setAttribute("r", Math.max(2, (x2 - x1) / 40));
      dot.setAttribute("class", "landmark");
      overlay.append(dot);
    }
  }
  $("event-face").src = event.face_url ? rel(event.face_url) : "";
  const facts = $("event-facts");
  facts.replaceChildren();
  const rows = [
    ["quality", qualityText(event) + (event.below_min_quality ? " (below min_quality)" : "")],
    ["detector score", event.det_score.toFixed(3)],
    ["start", clock(event.start_ts)], ["best frame", clock(event.ts)], ["end", clock(event.end_ts)],
    ["model", event.model], ["camera", event.camera], ["track", String(event.track)],
    ["event", `${event.event_id.slice(0, 12)} · seq ${event.seq}`],
  ];
  for (const [key, value] of rows) facts.append(el("dt", {text: key}), el("dd", {text: value, "data-field": key}));
  facts.querySelector('[data-field="quality"]').classList.add(`band-${bandOf(event)}`);
  $("event").showModal();
}

// ---- live updates --------------------------------------------------------------------------

function live(state, text) {
  const badge = $("live");
  badge.dataset.state = state;
  badge.textContent = text;
}

function connect(after) {
  // Resume after the newest event already shown, so nothing falls between the first page and the stream.
  const source = new EventSource(`./api/events/stream?after=${encodeURIComponent(after)}`);
  source.addEventListener("open", () => live("live", "live"));
  source.addEventListener("error", () => live("reconnecting", "reconnecting…")); // EventSource retries by itself
  source.addEventListener("event", (message) => addEvent(JSON.parse(message.data)));
  source.addEventListener("status", () => refreshCameras());
}

async function start() {
  $("attach").addEventListener("submit", (e) => { e.preventDefault(); attachCamera(e.target); });
  $("event").addEventListener("click", (e) => { if (e.target === $("event")) $("event").close(); });
  let newest = "0-0";
  try {
    gateInfo = await apiJson("api/gate");
    $("model").textContent = `quality ${gateInfo.model} on ${gateInfo.backend} · worker ${gateInfo.worker}`;
    showBands(gateInfo);
    const recent = await apiJson(`api/events?limit=${FACES_PER_CAMERA * 8}`);
    for (const event of recent.events) addEvent(event);
    if (recent.events.length) newest = recent.events[recent.events.length - 1].entry_id;
  } catch (err) {
    console.warn(err);
    if (err.message === "unauthorized") return;
  }
  await refreshCameras();
  setInterval(refreshCameras, CAMERA_REFRESH_MS);
  connect(newest);
}

start();
