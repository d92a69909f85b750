// The status page: polls the server's JSON picture once a second and redraws. Plain
// JavaScript, no build step; every value from the server goes in through textContent,
// never as HTML, since function names and client ids are whatever peers sent.
"use strict";

const POLL_MS = 1000;
const API = "api/";

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function number(value, field) {
  const td = cell(String(value), "n");
  td.dataset.field = field;
  return td;
}

function sparkline(series) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 100 20");
  svg.setAttribute("preserveAspectRatio", "none");
  if (series && series.length > 1) {
    const top = Math.max(1, ...series);
    const step = 100 / (series.length - 1);
    const points = series.map((v, i) => `${(i * step).toFixed(2)},${(19 - (v / top) * 18).toFixed(2)}`);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.join(" "));
    svg.appendChild(line);
    const title = document.createElementNS(ns, "title");
    title.textContent = `peak ${top} jobs`;
    svg.appendChild(title);
  }
  return svg;
}

// The previous picture's totals and time, to turn totals into rates per second.
let previous = { time: null, totals: new Map() };

function rates(f, now) {
  const before = previous.totals.get(f.name);
  const seconds = previous.time === null ? 0 : now - previous.time;
  if (!before || seconds <= 0) return ["", "", ""];
  const rate = (key) => Math.max(0, (f[key] - before[key]) / seconds).toFixed(1);
  return [rate("submitted_total"), rate("completed_total"), rate("failed_total")];
}

function drawFunctions(functions, history, now) {
  const body = document.querySelector("#functions tbody");
  const rows = functions.map((f) => {
    const [submitted, completed, failed] = rates(f, now);
    const tr = document.createElement("tr");
    tr.dataset.function = f.name;
    tr.append(
      cell(f.name, "name"),
      number(f.total, "total"),
      number(f.waiting, "waiting"),
      number(f.running, "running"),
      number(f.workers, "workers"),
      number(f.queued.high, "high"),
      number(f.queued.normal, "normal"),
      number(f.queued.low, "low"),
      number(f.scheduled, "scheduled"),
      number(submitted, "submitted_rate"),
      number(completed, "completed_rate"),
      number(failed, "failed_rate"),
    );
    const chart = document.createElement("td");
    chart.appendChild(sparkline(history ? history.functions[f.name] : null));
    tr.appendChild(chart);
    return tr;
  });
  body.replaceChildren(...rows);
  document.getElementById("no-functions").hidden = functions.length > 0;
  previous = { time: now, totals: new Map(functions.map((f) => [f.name, f])) };
}

function drawWorkers(workers) {
  const body = document.querySelector("#workers tbody");
  const rows = workers.map((w) => {
    const tr = document.createElement("tr");
    tr.dataset.fd = String(w.fd);
    tr.append(
      cell(w.address),
      number(w.fd, "fd"),
      cell(w.client_id),
      cell(w.functions.join(", ")),
      cell(w.jobs.length ? "working" : w.sleeping ? "sleeping" : "idle"),
      cell(w.jobs.join(", ")),
    );
    return tr;
  });
  body.replaceChildren(...rows);
  document.getElementById("no-workers").hidden = workers.length > 0;
}

function drawQueue(queue) {
  const dd = document.getElementById("queue");
  if (queue.backend === "none") {
    dd.textContent = "none (background jobs in memory only)";
    dd.className = "";
  } else if (queue.up) {
    dd.textContent = `${queue.backend}, up` + (queue.outstanding ? `, ${queue.outstanding} writing` : "");
    dd.className = "up";
  } else {
    dd.textContent = `${queue.backend}, down: ${queue.reason}`;
    dd.className = "down";
  }
}

function draw(picture) {
  document.getElementById("version").textContent = picture.version;
  document.getElementById("listening").textContent = picture.listening.join(", ");
  document.getElementById("connections").textContent = String(picture.connections);
  document.getElementById("updated").textContent = new Date(picture.time * 1000).toLocaleTimeString();
  drawQueue(picture.queue);
  drawFunctions(picture.functions, picture.history, picture.time);
  drawWorkers(picture.workers);
}

async function poll() {
  try {
    const reply = await fetch(API + "status", { cache: "no-store" });
    if (!reply.ok) throw new Error(`HTTP ${reply.status}`);
    draw(await reply.json());
    document.getElementById("offline").hidden = true;
    document.body.dataset.loaded = "true";
  } catch (error) {
    document.getElementById("offline").hidden = false;
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

// -- finding and cancelling a job --------------------------------------------------

let shownJob = null;

function say(message) {
  document.getElementById("job-message").textContent = message;
}

function showJob(job) {
  shownJob = job;
  const box = document.getElementById("job");
  const list = box.querySelector("dl");
  const facts = [
    ["handle", job.handle], ["function", job.function], ["unique", job.unique],
    ["state", job.state], ["priority", job.priority],
    ["kind", job.background ? "background" : "foreground"],
    ["bytes", String(job.size)], ["progress", `${job.progress[0]} / ${job.progress[1]}`],
    ["worker", job.worker ? `${job.worker.address} (fd ${job.worker.fd})` : "none"],
    ["waiting clients", String(job.waiting_clients)],
  ];
  list.replaceChildren(...facts.flatMap(([name, value]) => {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value;
    dd.dataset.field = name;
    return [dt, dd];
  }));
  box.hidden = false;
}

async function findJob(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const query = new URLSearchParams();
  for (const key of ["handle", "function", "unique"]) {
    const value = String(form.get(key) || "").trim();
    if (value) query.set(key, value);
  }
  document.getElementById("job").hidden = true;
  const reply = await fetch(API + "jobs?" + query.toString(), { cache: "no-store" });
  const body = await reply.json();
  if (reply.ok) {
    showJob(body);
    say("");
  } else {
    say(body.error ? body.error.message : `HTTP ${reply.status}`);
  }
}

async function cancelJob() {
  if (!shownJob) return;
  const handle = shownJob.handle;
  // The gateway's cancel: queued and delayed jobs only, as for any HTTP caller.
  const reply = await fetch("v1/jobs/" + encodeURIComponent(handle), { method: "DELETE" });
  const body = await reply.json();
  if (reply.ok) {
    document.getElementById("job").hidden = true;
    say(`Cancelled ${handle}.`);
    shownJob = null;
  } else {
    say(body.error ? body.error.message : `HTTP ${reply.status}`);
  }
}

document.getElementById("find-job").addEventListener("submit", findJob);
document.getElementById("cancel-job").addEventListener("click", cancelJob);
poll();
