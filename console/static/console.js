// The console's only script: confirmations, and updates pushed by the server (server-sent events).
// Everything from the server is set with textContent, or is HTML the server rendered and escaped.
"use strict";

function confirmForms() {
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      if (!window.confirm(form.dataset.confirm)) ev.preventDefault();
    });
  });
}

function showHealth(h) {
  var box = document.getElementById("health");
  if (!box) return;
  box.className = "health " + h.supervisor;
  box.querySelectorAll("[data-h]").forEach(function (el) {
    var v = h[el.dataset.h];
    el.textContent = v === null || v === undefined ? "–" : String(v);
  });
}

// Refetch a server-rendered fragment into `box`: at most one request in flight, and none sooner
// than `gap` ms after the last one: 400 ms after a change of state, 5 s when only percentages
// moved (the board sets those in place), so a busy spool (every running job's progress changes
// each second) costs a page a few requests a second at most, not one per change.
function refresher(box, url) {
  var busy = false, again = null, last = 0, timer = null, due = Infinity;
  function run(gap) {
    gap = gap === undefined ? 400 : gap;
    if (busy) { again = again === null ? gap : Math.min(again, gap); return; }
    var at = last + gap;
    if (at > Date.now()) {
      if (at < due) {
        clearTimeout(timer);
        due = at;
        timer = setTimeout(function () { timer = null; due = Infinity; run(0); }, at - Date.now());
      }
      return;
    }
    clearTimeout(timer);
    timer = null;
    due = Infinity;
    busy = true;
    last = Date.now();
    fetch(url(), {credentials: "same-origin"}).then(function (r) {
      if (r.status === 200) return r.text();
      if (r.status === 401 || r.redirected) window.location.reload();
      return null;
    }).then(function (html) {
      if (html !== null) box.innerHTML = html;
    }).finally(function () {
      busy = false;
      if (again !== null) { var g = again; again = null; run(g); }
    });
  }
  return run;
}

// `progress` is {serviceID: percent or null} for jobs whose percentage alone moved.
function showProgress(box, moved) {
  box.querySelectorAll("tr[data-sid]").forEach(function (tr) {
    if (!Object.prototype.hasOwnProperty.call(moved, tr.dataset.sid)) return;
    var p = moved[tr.dataset.sid], bar = tr.querySelector("progress"), pct = tr.querySelector(".pct");
    if (p === null) {
      bar.removeAttribute("value");
      pct.textContent = "–";
    } else {
      bar.value = p;
      pct.textContent = p.toFixed(0) + " %";
    }
  });
}

function board() {
  var box = document.getElementById("board");
  if (!box) return;
  var refresh = refresher(box, function () { return "/board?" + box.dataset.query; });
  var es = new EventSource("/events?since=" + box.dataset.seq);
  es.addEventListener("jobs", function () { refresh(400); });
  es.addEventListener("snapshot", function () { refresh(400); });
  es.addEventListener("progress", function (ev) {
    showProgress(box, JSON.parse(ev.data));
    refresh(5000);  // the elapsed and remaining times
  });
  es.addEventListener("health", function (ev) { showHealth(JSON.parse(ev.data)); });
}

function jobPage() {
  var box = document.getElementById("job");
  if (!box) return;
  var sid = box.dataset.sid, log = document.getElementById("log"), outcome = document.getElementById("outcome");
  // the command this page was opened after (kill, restart): its outcome is the first row without it pending
  var requested = box.dataset.requested || null, requestedSeq = Number(box.dataset.requestedSeq || 0);
  var attempt = null;
  var refresh = refresher(box, function () { return "/jobs/" + encodeURIComponent(sid) + "/summary"; });
  var es = new EventSource("/jobs/" + encodeURIComponent(sid) + "/events");
  es.addEventListener("job", function (ev) {
    var job = JSON.parse(ev.data);
    if (requested && !job.pending_commands.length && job.seq > requestedSeq) {
      outcome.textContent = requested + " applied by the supervisor: the job is now " + job.state +
        (job.reason ? " (" + job.reason + ")" : "");
      outcome.hidden = false;
      requested = null;
    }
    refresh();
  });
  es.addEventListener("log", function (ev) {
    var chunk = JSON.parse(ev.data);
    if (attempt !== null && chunk.attempt !== attempt) log.textContent = "";
    attempt = chunk.attempt;
    var span = document.createElement("span");
    span.className = chunk.stream;
    span.textContent = chunk.text;
    log.appendChild(span);
    log.scrollTop = log.scrollHeight;
  });
  es.addEventListener("gone", function () { es.close(); });
}

document.addEventListener("DOMContentLoaded", function () {
  confirmForms();
  board();
  jobPage();
});
