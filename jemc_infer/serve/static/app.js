// The search page: plain JavaScript, no framework, no build step. Served by `jemc-infer serve`.
"use strict";

const form = document.getElementById("search");
const input = document.getElementById("q");
const statusLine = document.getElementById("status");
const results = document.getElementById("results");
const player = document.getElementById("player");
const playerBox = document.getElementById("player-box");
const nowPlaying = document.getElementById("now-playing");

function clock(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mm = h ? String(m).padStart(2, "0") : String(m);
  return (h ? h + ":" : "") + mm + ":" + String(r).padStart(2, "0");
}

async function search(text) {
  statusLine.textContent = "Searching…";
  results.replaceChildren();
  let body;
  try {
    const resp = await fetch("/search", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text: text, k: 12 }),
    });
    body = await resp.json();
    if (!resp.ok) {
      statusLine.textContent = "Error: " + (body.error || resp.status);
      return;
    }
  } catch (err) {
    statusLine.textContent = "Error: " + err;
    return;
  }
  show(body.results[0].hits, body.warnings, "");
}

function show(hits, warnings, label) {
  const warn = warnings.length ? " (" + warnings.join("; ") + ")" : "";
  statusLine.textContent = hits.length + (hits.length === 1 ? " video" : " videos") + label + warn;
  results.replaceChildren();
  hits.forEach((hit) => results.appendChild(card(hit)));
}

async function similar(hit) {
  statusLine.textContent = "Searching…";
  try {
    const resp = await fetch("/videos/" + hit.id + "/similar?k=12");
    const body = await resp.json();
    if (!resp.ok) {
      statusLine.textContent = "Error: " + (body.error || resp.status);
      return;
    }
    show(body.hits, [], " like " + hit.path);
  } catch (err) {
    statusLine.textContent = "Error: " + err;
  }
}

function card(hit) {
  const li = document.createElement("li");
  const button = document.createElement("button");  // a button: focusable, Enter and Space play it
  button.type = "button";
  button.className = "hit";
  button.dataset.id = hit.id;
  const start = hit.moment ? hit.moment.start : 0;
  const when = hit.moment ? " at " + clock(hit.moment.start) + "–" + clock(hit.moment.end) : "";
  button.setAttribute("aria-label", "Play " + hit.path + when);
  const img = document.createElement("img");
  img.src = hit.thumbnail;
  img.alt = "";
  img.loading = "lazy";
  const meta = document.createElement("div");
  meta.className = "meta";
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = "score " + hit.score.toFixed(3);
  const duration = document.createElement("span");
  duration.className = "duration";
  duration.textContent = hit.moment ? clock(hit.moment.start) + "–" + clock(hit.moment.end) + " / " + clock(hit.duration)
                                    : clock(hit.duration);
  meta.append(score, duration);
  const path = document.createElement("div");
  path.className = "path";
  path.textContent = hit.rank + ". " + hit.path;
  button.append(img, meta, path);
  button.addEventListener("click", () => play(hit, start));
  const more = document.createElement("button");  // beside the card: a button may not hold a button
  more.type = "button";
  more.className = "more";
  more.textContent = "More like this";
  more.setAttribute("aria-label", "More like " + hit.path);
  more.addEventListener("click", () => similar(hit));
  li.append(button, more);
  return li;
}

function play(hit, start) {
  playerBox.hidden = false;
  nowPlaying.textContent = hit.path + (start ? " from " + clock(start) : "");
  player.dataset.id = hit.id;
  // seek once the metadata (duration, seekable ranges) is known, then play from there
  player.addEventListener("loadedmetadata", () => {
    player.currentTime = start;
    player.play().catch(() => {});  // a browser may refuse autoplay: the controls remain
  }, { once: true });
  player.src = hit.file;
  player.load();
  player.scrollIntoView({ block: "nearest" });
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (text) search(text);
});
