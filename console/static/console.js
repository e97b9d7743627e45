// The console's only script: confirmations, and updates pushed by the server (server-sent events).
// Everything from the server is set with textContent, or is HTML the server rendered and escaped.
//
// One event stream per browser, however many tabs: a browser opens at most six HTTP/1.1 connections
// to a host, and a held stream keeps one busy, so the seventh tab would never load. The tab that holds
// the Web Lock "console-events" (the leader) opens the board's stream and passes each event to the
// others over a BroadcastChannel; when it closes, another tab takes the lock and the stream over.
// A job page follows its log by short requests (/jobs/<id>/output), which share the connections.
// When the console cannot be reached, every tab says so and keeps retrying.
"use strict";

var listeners = [];   // function (type, data): every page part that wants the stream's events
var lastSeq = null;   // the last event id seen: a new leader resumes from it

function deliver(type, data) {
  if (type === "seq") { lastSeq = data; return; }
  listeners.forEach(function (fn) { fn(type, data); });
}

// Connection state, shown on every page: "lost" when the stream or a request failed, "up" again on success.
function showConnection(state) {
  var banner = document.getElementById("connection");
  if (!banner) return;
  var lost = state === "lost";
  banner.hidden = !lost;
  document.body.classList.toggle("offline", lost);
  if (lost) {
    var box = document.getElementById("health");
    if (box) {
      box.className = "health unknown";
      box.querySelectorAll("[data-h]").forEach(function (el) { el.textContent = "?"; });
    }
  }
}
listeners.push(function (type, data) {
  if (type === "connection") showConnection(data);
  else if (type === "health") showHealth(data);
});

// The leader's stream: each event goes to `send` (this tab and the others). A stream the browser gave up
// (an error answer) is opened again after a pause; one refused for want of a login reloads every tab.
function openStream(send) {
  var es = null, retry = null;
  function open() {
    retry = null;
    es = new EventSource("/events" + (lastSeq === null ? "" : "?since=" + encodeURIComponent(lastSeq)));
    es.onopen = function () { send("connection", "up"); };
    es.onerror = function () {
      send("connection", "lost");
      if (es.readyState === EventSource.CLOSED && retry === null) {
        fetch("/api/health", {credentials: "same-origin"}).then(function (r) {
          if (r.status === 401) send("reload", null);
        }).catch(function () { /* still down: retried below */ });
        retry = setTimeout(open, 3000);
      }
    };
    ["jobs", "snapshot", "progress", "health"].forEach(function (type) {
      es.addEventListener(type, function (ev) {
        if (ev.lastEventId) send("seq", ev.lastEventId);
        send(type, JSON.parse(ev.data));
      });
    });
  }
  open();
}

function sharedEvents(since) {
  lastSeq = since || null;
  listeners.push(function (type) { if (type === "reload") window.location.reload(); });
  if (!("BroadcastChannel" in window) || !navigator.locks) { openStream(deliver); return; }
  var channel = new BroadcastChannel("console-events");
  channel.onmessage = function (ev) { deliver(ev.data.type, ev.data.data); };
  navigator.locks.request("console-events", function () {
    return new Promise(function () {  // held while this page is open
      openStream(function (type, data) {
        channel.postMessage({type: type, data: data});
        deliver(type, data);
      });
    });
  });
}

// A request the page makes: a failure (the console is down) shows the lost connection, never an uncaught
// error; a login asked for reloads the page (to the login page).
function request(url) {
  return fetch(url, {credentials: "same-origin"}).then(function (r) {
    if (r.status === 401 || r.redirected) { window.location.reload(); return null; }
    showConnection("up");
    return r.status === 200 ? r : null;
  }, function () {
    showConnection("lost");
    return null;
  });
}

// Every form with data-confirm asks first (delegated: the job page's buttons are re-rendered in place).
function confirmForms() {
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) ev.preventDefault();
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
    request(url()).then(function (r) {
      return r === null ? null : r.text();
    }).then(function (html) {
      if (html !== null) box.innerHTML = html;
    }).catch(function () {
      showConnection("lost");
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
      if (tr.classList.contains("running") || tr.classList.contains("stopping")) bar.removeAttribute("value");
      else bar.value = 0;
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
  // the query has the filters and the page: a live update keeps the page the URL names
  var refresh = refresher(box, function () { return "/board?" + box.dataset.query; });
  listeners.push(function (type, data) {
    if (type === "jobs" || type === "snapshot") refresh(400);
    else if (type === "progress") {
      showProgress(box, data);
      refresh(5000);  // the elapsed and remaining times
    } else if (type === "connection" && data === "up") refresh(400);
  });
}

function jobPage() {
  var box = document.getElementById("job");
  if (!box) return;
  var sid = box.dataset.sid, log = document.getElementById("log"), outcome = document.getElementById("outcome");
  // the command this page was opened after (kill, restart): its outcome is the first row without it pending
  var requested = box.dataset.requested || null, requestedSeq = Number(box.dataset.requestedSeq || 0);
  var refresh = refresher(box, function () { return "/jobs/" + encodeURIComponent(sid) + "/summary"; });
  var output = followOutput(sid, log);
  listeners.push(function (type, data) {
    if (type === "jobs") {
      data.forEach(function (job) {
        if (job.service_id !== sid) return;
        if (requested && !job.pending_commands.length && job.seq > requestedSeq) {
          outcome.textContent = requested + " applied by the supervisor: the job is now " + job.state +
            (job.reason ? " (" + job.reason + ")" : "");
          outcome.hidden = false;
          requested = null;
        }
        refresh();
        output.now();
      });
    } else if (type === "progress" && Object.prototype.hasOwnProperty.call(data, sid)) {
      refresh(1000);
    } else if (type === "snapshot" || (type === "connection" && data === "up")) {
      refresh();
      output.now();
    }
  });
}

// The current attempt's stdout and stderr, asked for every second while the job runs (every 10 s once it
// waits or ended; at once when its row changes), from the offsets already shown.
function followOutput(sid, log) {
  var attempt = null, offsets = {stdout: -1, stderr: -1}, timer = null, busy = false;
  function poll() {
    clearTimeout(timer);
    timer = null;
    if (busy) return;
    busy = true;
    var url = "/jobs/" + encodeURIComponent(sid) + "/output?stdout=" + offsets.stdout + "&stderr=" + offsets.stderr +
      (attempt === null ? "" : "&attempt=" + attempt);
    request(url).then(function (r) {
      return r === null ? null : r.json();
    }).then(function (out) {
      var active = true;
      if (out !== null) {
        if (attempt !== null && out.attempt !== attempt) log.textContent = "";
        attempt = out.attempt;
        offsets = out.offsets;
        out.chunks.forEach(function (chunk) {
          var span = document.createElement("span");
          span.className = chunk.stream;
          span.textContent = chunk.text;
          log.appendChild(span);
        });
        if (out.chunks.length) log.scrollTop = log.scrollHeight;
        active = out.state === "RUNNING" || out.state === "STOPPING";
      }
      timer = setTimeout(poll, active ? 1000 : 10000);
    }).catch(function () {
      showConnection("lost");
      timer = setTimeout(poll, 3000);
    }).finally(function () { busy = false; });
  }
  poll();
  return {now: function () { if (!busy) poll(); }};
}

document.addEventListener("DOMContentLoaded", function () {
  confirmForms();
  board();
  jobPage();
  var seqOf = document.getElementById("board") || document.getElementById("job");
  if (seqOf) sharedEvents(seqOf.dataset.seq);
});
