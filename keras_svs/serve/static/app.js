// The keras-svs serve page: uploads, one progress bar per job, players and downloads.
// Plain JavaScript, no build step. Every /api call goes through api(), which adds the
// token (asked once, kept in localStorage) and turns an error into its one-line message.
"use strict";

const state = { token: localStorage.getItem("keras-svs-token") || "", uploads: new Map(),
                cards: new Map(), media: new Map(), timer: null };
const $ = (id) => document.getElementById(id);

function headers() {
  return state.token ? { Authorization: "Bearer " + state.token } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (response.status === 401) { askToken(); throw new Error("this server needs a token"); }
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function show(message) {
  const box = $("message");
  box.textContent = message || "";
  box.hidden = !message;
}

function askToken() {
  $("login").hidden = false;
  $("login").elements.token.focus();
}

function element(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

// -- options ----------------------------------------------------------------------------
async function loadOptions() {
  const choices = await (await api("/api/options")).json();
  const form = $("options");
  for (const model of choices.models) form.elements.model.append(element("option", { value: model, textContent: model }));
  for (const mask of choices.masks) form.elements.mask.append(element("option", { value: mask, textContent: mask }));
  for (const codec of choices.codecs) form.elements.codec.append(element("option", { value: codec, textContent: codec }));
  form.elements.model.value = choices.defaults.model;
  form.elements.mask.value = choices.defaults.mask || "";
  form.elements.codec.value = choices.defaults.codec;
  for (const stem of choices.stems) {
    const box = element("input", { type: "checkbox", name: "stem", value: stem,
                                    checked: choices.defaults.stems.includes(stem) });
    $("stems").append(element("label", {}, box, " " + stem));
  }
  $("limit").textContent = "Up to " + Math.round(choices.max_upload_bytes / 1048576) + " MB a song.";
}

// -- uploads ----------------------------------------------------------------------------
function upload(file) {
  const form = $("options");
  const data = new FormData();
  data.append("model", form.elements.model.value);
  data.append("mask", form.elements.mask.value);
  data.append("codec", form.elements.codec.value);
  const stems = [...form.querySelectorAll("input[name=stem]:checked")].map((b) => b.value);
  data.append("stems", stems.join(","));
  data.append("file", file, file.name);
  const key = "upload-" + Math.random().toString(36).slice(2);
  const card = uploadCard(file.name);
  state.uploads.set(key, card);
  $("jobs").prepend(card);
  $("empty").hidden = true;
  const request = new XMLHttpRequest();
  request.open("POST", "/api/jobs");
  for (const [name, value] of Object.entries(headers())) request.setRequestHeader(name, value);
  request.upload.onprogress = (event) => {
    if (event.lengthComputable) card.querySelector("progress").value = event.loaded / event.total;
  };
  request.onload = () => {
    state.uploads.delete(key);
    card.remove();
    if (request.status === 201) { refresh(); return; }
    if (request.status === 401) askToken();
    let message = "upload failed (" + request.status + ")";
    try { message = JSON.parse(request.responseText).error || message; } catch (e) { /* not JSON */ }
    show(message.startsWith(file.name + ":") ? message : file.name + ": " + message);
  };
  request.onerror = () => { state.uploads.delete(key); card.remove(); show(file.name + ": the upload failed (network)"); };
  request.send(data);
}

function uploadCard(name) {
  return element("li", { className: "job" },
    element("div", { className: "top" }, element("span", { className: "name", textContent: name }),
            element("span", { className: "status", textContent: "uploading" })),
    element("progress", { max: 1, value: 0 }));
}

// -- jobs -------------------------------------------------------------------------------
function statusText(job) {
  if (job.status === "queued") return job.position ? "queued (" + job.position + " ahead)" : "queued (next)";
  if (job.status === "running") return job.progress > 0 ? "separating " + Math.round(100 * job.progress) + "%" : "separating";
  if (job.status === "done") return "done";
  return "failed";
}

function jobCard(job) {
  const remove = element("button", { className: "remove", textContent: "remove", title: "stop and delete this job" });
  remove.addEventListener("click", async () => {
    try { await api(job.url, { method: "DELETE" }); } catch (error) { show(error.message); }
    refresh();
  });
  const card = element("li", { className: "job" },
    element("div", { className: "top" },
            element("span", { className: "name", textContent: job.name }),
            element("span", { className: "status" }), remove),
    element("progress", { max: 1, value: 0 }),
    element("p", { className: "error", hidden: true }),
    element("div", { className: "result" }));
  card.dataset.id = job.id;
  return card;
}

function update(card, job) {
  card.dataset.status = job.status;
  card.querySelector(".status").textContent = statusText(job);
  const bar = card.querySelector("progress");
  if (job.status === "running" && job.progress === 0) bar.removeAttribute("value");
  else bar.value = job.status === "done" ? 1 : job.progress;
  bar.hidden = job.status === "done" || job.status === "failed";
  const error = card.querySelector(".error");
  error.hidden = !job.error;
  error.textContent = job.error || "";
  if (job.status === "done" && !card.dataset.shown) {
    card.dataset.shown = "1";
    showResult(card, job).catch((e) => show(job.name + ": " + e.message));
  }
}

async function blobUrl(url) {
  if (!state.media.has(url)) {
    const blob = await (await api(url)).blob();
    state.media.set(url, URL.createObjectURL(blob));
  }
  return state.media.get(url);
}

async function showResult(card, job) {
  const result = card.querySelector(".result");
  const players = [];
  const codec = job.options.codec;
  const base = job.name.replace(/\.[^.]*$/, "");
  for (const [stem, url] of Object.entries(job.stems)) {
    const audio = element("audio", { controls: true, preload: "auto" });
    audio.dataset.stem = stem;
    audio.dataset.url = url;
    const solo = element("button", { className: "solo", textContent: "solo" });
    const mute = element("button", { className: "mute", textContent: "mute" });
    const link = element("a", { className: "download", textContent: "download", download: base + " (" + stem + ")." + codec });
    link.dataset.url = url;
    players.push({ audio, solo, mute });
    result.append(element("div", { className: "stem" }, element("strong", { textContent: stem }), audio, solo, mute, link));
    const source = await blobUrl(url);
    audio.src = source;
    link.href = source;
  }
  for (const player of players) {
    player.mute.addEventListener("click", () => {
      player.audio.muted = !player.audio.muted;
      player.mute.classList.toggle("on", player.audio.muted);
    });
    player.solo.addEventListener("click", () => {
      const on = !player.solo.classList.contains("on");
      for (const other of players) {
        other.solo.classList.toggle("on", on && other === player);
        other.audio.muted = on && other !== player;
        other.mute.classList.toggle("on", other.audio.muted);
      }
      if (on) { // play the soloed stem from where the others are
        const time = Math.max(...players.map((p) => p.audio.currentTime));
        player.audio.currentTime = time;
      }
    });
    player.audio.addEventListener("play", () => { // the stems play together
      for (const other of players) {
        if (other !== player && other.audio.paused) {
          other.audio.currentTime = player.audio.currentTime;
          other.audio.play().catch(() => {});
        }
      }
    });
    player.audio.addEventListener("pause", () => {
      for (const other of players) if (other !== player && !other.audio.paused) other.audio.pause();
    });
  }
  if (job.plot) {
    const image = element("img", { className: "plot", alt: "spectrograms and voice mask of " + job.name });
    result.append(image);
    image.src = await blobUrl(job.plot);
  }
}

async function refresh() {
  clearTimeout(state.timer);
  let busy = false;
  try {
    const jobs = await (await api("/api/jobs")).json();
    const seen = new Set();
    const list = $("jobs");
    for (const job of jobs.slice().reverse()) { // newest first
      seen.add(job.id);
      let card = state.cards.get(job.id);
      if (!card) {
        card = jobCard(job);
        state.cards.set(job.id, card);
      }
      list.append(card);
      update(card, job);
      busy = busy || job.status === "queued" || job.status === "running";
    }
    for (const [id, card] of state.cards) {
      if (!seen.has(id)) { card.remove(); state.cards.delete(id); }
    }
    for (const card of state.uploads.values()) list.prepend(card);
    $("empty").hidden = jobs.length > 0 || state.uploads.size > 0;
  } catch (error) {
    show(error.message);
  }
  state.timer = setTimeout(refresh, busy || state.uploads.size ? 1000 : 5000);
}

// -- start ------------------------------------------------------------------------------
function start() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => {
    for (const file of event.target.files) upload(file);
    event.target.value = "";
  });
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    for (const file of event.dataTransfer.files) upload(file);
  });
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = $("login").elements.token.value.trim();
    localStorage.setItem("keras-svs-token", state.token);
    $("login").hidden = true;
    show("");
    init();
  });
  init();
}

async function init() {
  try {
    if (!$("options").elements.model.options.length) await loadOptions();
    show("");
  } catch (error) {
    show(error.message);
    return;
  }
  refresh();
}

start();
