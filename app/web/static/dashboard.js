/* Cosmic Horizons live dashboard — plain JS, no build step, no external resources.
 *
 * Data sources (see docs/dashboard.md and docs/websocket.md):
 *   websocket /ws      auth frame first, then subscribe `jobs:all` and `system:alerts`;
 *                      on reconnect the last seen position per partition is sent as `resume`.
 *   GET /api/stats     counts by status + DLQ sizes          (polled)
 *   GET /api/jobs      the current job list (snapshot)        (polled, fills in jobs not seen live)
 *   GET /api/metrics/gpus  latest GPU utilisation per node/gpu (polled, heatmap)
 * Any of them may be missing (404) or failing: that panel says "unavailable" and keeps retrying.
 * The three are gathered from every worker of the group (docs/api.md); they are asked with
 * allow_partial=true, so while a worker is missing a panel shows what did answer and says
 * "partial" (with the missing partitions) instead of going blank.
 * Data is only ever written into the DOM with textContent (never as HTML).
 */
(function () {
  "use strict";

  var TOKEN_KEY = "cosmic.dashboard.token";
  var STATUSES = ["SUBMITTED", "QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"];
  var CHANNEL_JOBS = "jobs:all";
  var CHANNEL_ALERTS = "system:alerts";
  var MAX_JOBS_SHOWN = 200;
  var MAX_JOBS_KEPT = 2000;
  var MAX_FAILURES = 25;
  var MAX_ALERTS = 50;
  var STATS_EVERY_MS = 5000;
  var JOBS_EVERY_MS = 10000;
  var GPUS_EVERY_MS = 4000;
  var PING_EVERY_MS = 20000;
  var PONG_TIMEOUT_MS = 10000;
  var BACKOFF_MIN_MS = 500;
  var BACKOFF_MAX_MS = 15000;

  var state = {
    token: null,
    connection: "disconnected",
    identity: null,
    socket: null,
    attempt: 0,
    reconnectTimer: null,
    pingTimer: null,
    pongTimer: null,
    // channel -> {"topic|partition": {topic, partition, offset}}: the resume positions
    positions: {},
    jobs: new Map(),            // job_id -> job
    failures: [],               // newest first
    failureIds: new Set(),
    alerts: new Map(),          // alert_id -> alert (latest)
    gaps: [],
    serverCounts: null,         // from /api/stats
    dlq: null,
    gpus: null,
    sources: {},                // panel -> "ok" | "unavailable (...)"
    renderQueued: false,
    subscribed: {},             // channel -> true once the server confirmed it
    statsSoon: null,
    pollers: []
  };

  function $(id) { return document.getElementById(id); }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function timeText(value) {
    if (value === undefined || value === null || value === "") return "";
    var d = typeof value === "number" ? new Date(value) : new Date(String(value));
    if (isNaN(d.getTime())) return String(value);
    return d.toLocaleTimeString();
  }

  function timeMs(value) {
    if (value === undefined || value === null || value === "") return 0;
    var ms = typeof value === "number" ? value : Date.parse(String(value));
    return isNaN(ms) ? 0 : ms;
  }

  // ---------------------------------------------------------------- token

  function readToken() {
    var hash = window.location.hash || "";
    var match = /(?:^#|&)token=([^&]+)/.exec(hash);
    if (match) {
      var token = decodeURIComponent(match[1]);
      try { sessionStorage.setItem(TOKEN_KEY, token); } catch (e) { /* storage disabled */ }
      // Drop the token from the address bar and the history entry.
      history.replaceState(null, "", window.location.pathname + window.location.search);
      return token;
    }
    try { return sessionStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
  }

  function showTokenForm(message) {
    $("token-panel").hidden = false;
    $("token-error").textContent = message || "";
    $("sign-out").hidden = true;
  }

  function useToken(token) {
    state.token = token;
    try { sessionStorage.setItem(TOKEN_KEY, token); } catch (e) { /* storage disabled */ }
    $("token-panel").hidden = true;
    $("sign-out").hidden = false;
    state.attempt = 0;
    connect();
    startPolling();
  }

  function forgetToken(message) {
    state.token = null;
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* storage disabled */ }
    stopPolling();
    clearTimeout(state.reconnectTimer);
    if (state.socket) { try { state.socket.close(1000); } catch (e) { /* closed */ } }
    setConnection("unauthorised", message || "no token");
    showTokenForm(message);
  }

  // ---------------------------------------------------------------- connection indicator

  function setConnection(name, detail) {
    state.connection = name;
    var node = $("connection");
    node.className = "connection conn-" + name;
    node.setAttribute("data-state", name);
    node.textContent = detail ? name + " — " + detail : name;
  }

  function notice(text) {
    var node = $("notice");
    node.hidden = !text;
    node.textContent = text || "";
  }

  // ---------------------------------------------------------------- websocket

  function wsUrl() {
    return (window.location.protocol === "https:" ? "wss:" : "ws:") + "//" + window.location.host + "/ws";
  }

  function send(frame) {
    if (state.socket && state.socket.readyState === WebSocket.OPEN) {
      state.socket.send(JSON.stringify(frame));
    }
  }

  function resumeOf(channel) {
    var known = state.positions[channel] || {};
    return Object.keys(known).map(function (k) { return known[k]; });
  }

  function subscribe(channel) {
    var frame = { type: "subscribe", channel: channel };
    var resume = resumeOf(channel);
    if (resume.length) frame.resume = resume;
    send(frame);
  }

  function connect() {
    if (!state.token) return;
    clearTimeout(state.reconnectTimer);
    if (state.socket) {   // a new token while connected: drop the old connection first
      var old = state.socket;
      state.socket = null;
      try { old.close(1000); } catch (e) { /* closed */ }
    }
    setConnection(state.attempt ? "reconnecting" : "connecting");
    var socket;
    try {
      socket = new WebSocket(wsUrl());
    } catch (e) {
      scheduleReconnect("cannot open websocket");
      return;
    }
    state.socket = socket;
    socket.onopen = function () {
      if (state.socket !== socket) return;
      socket.send(JSON.stringify({ type: "auth", token: state.token }));
    };
    socket.onmessage = function (message) {
      if (state.socket !== socket) return;
      var frame;
      try { frame = JSON.parse(message.data); } catch (e) { return; }
      if (frame && typeof frame === "object") onFrame(frame);
    };
    socket.onclose = function (event) {
      if (state.socket !== socket) return;
      state.socket = null;
      state.subscribed = {};
      stopPing();
      if (event.code === 4001) {
        forgetToken("the server refused the token (expired, forged or wrong audience): paste a new one");
        return;
      }
      var why = event.code === 4008 ? "slow consumer" : event.code === 1001 ? "server shutting down"
        : "closed (" + event.code + ")";
      scheduleReconnect(why);
    };
    socket.onerror = function () { /* onclose follows and reconnects */ };
  }

  function scheduleReconnect(why) {
    if (!state.token) return;
    state.attempt += 1;
    var base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, state.attempt - 1));
    var delay = Math.round(base / 2 + Math.random() * base / 2);
    setConnection("reconnecting", why + ", retrying in " + (delay / 1000).toFixed(1) + " s");
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = setTimeout(connect, delay);
  }

  function startPing() {
    stopPing();
    state.pingTimer = setInterval(function () {
      send({ type: "ping", id: Date.now() });
      clearTimeout(state.pongTimer);
      state.pongTimer = setTimeout(function () {
        // no answer: the connection is dead even if the browser has not noticed yet
        if (state.socket) { try { state.socket.close(4000, "no pong"); } catch (e) { /* closed */ } }
      }, PONG_TIMEOUT_MS);
    }, PING_EVERY_MS);
  }

  function stopPing() {
    clearInterval(state.pingTimer);
    clearTimeout(state.pongTimer);
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "welcome":
        state.attempt = 0;
        state.identity = { user_id: frame.user_id, operator: !!frame.operator };
        $("identity").textContent = (frame.user_id || "?") + (frame.operator ? " (operator)" : "");
        setConnection("connected");
        if (!frame.operator) notice("This token is not an operator's: the job feed (jobs:all) needs the operator role.");
        else notice("");
        state.subscribed = {};
        subscribe(CHANNEL_JOBS);
        subscribe(CHANNEL_ALERTS);
        startPing();
        break;
      case "subscribed":
        state.subscribed[frame.channel] = true;
        // the feed is live from here: reconcile with the server's view of what happened before
        // (or while disconnected, on partitions the resume could not name)
        if (frame.channel === CHANNEL_JOBS) { pollJobs(); pollStats(); }
        break;
      case "unsubscribed":
        delete state.subscribed[frame.channel];
        break;
      case "event":
        onEvent(frame);
        break;
      case "pong":
        clearTimeout(state.pongTimer);
        break;
      case "not_recovered":
        state.gaps.unshift({
          channel: frame.channel, reason: frame.reason || "resume position older than retention",
          at: Date.now()
        });
        state.gaps = state.gaps.slice(0, 5);
        scheduleRender();
        break;
      case "error":
        if (frame.code === "not_authenticated") {
          forgetToken(frame.message || "not authenticated");
        } else if (frame.code === "forbidden") {
          notice("Not allowed: " + (frame.channel || "") + " — " + (frame.message || "operator role required"));
        } else {
          notice("Server: " + (frame.code || "error") + (frame.message ? " — " + frame.message : ""));
        }
        break;
      default:
        break; // recovered: nothing to show
    }
  }

  function remember(channel, position) {
    if (!position || position.topic === undefined || position.partition === undefined) return;
    var known = state.positions[channel] || (state.positions[channel] = {});
    var key = position.topic + "|" + position.partition;
    var prev = known[key];
    if (!prev || position.offset > prev.offset) {
      known[key] = { topic: position.topic, partition: position.partition, offset: position.offset };
    }
  }

  function onEvent(frame) {
    remember(frame.channel, frame.position);
    var event = frame.event || {};
    if (frame.channel === CHANNEL_JOBS) applyJobEvent(event, frame.timestamp);
    else if (frame.channel === CHANNEL_ALERTS) applyAlert(event);
    scheduleRender();
  }

  // ---------------------------------------------------------------- jobs

  function statusOf(event) {
    switch (event.event_type) {
      case "JobSubmitted": return "SUBMITTED";
      case "JobQueued": return "QUEUED";
      case "JobStatusChanged": return event.new_status || null;
      case "JobCompleted": return "COMPLETED";
      case "JobFailed": return "FAILED";
      case "JobCancelled": return "CANCELLED";
      default: return null;
    }
  }

  function applyJobEvent(event, frameTimestamp) {
    if (!event.job_id) return;
    var at = timeMs(event.timestamp) || timeMs(frameTimestamp) || Date.now();
    var job = state.jobs.get(event.job_id);
    if (!job) {
      job = { job_id: event.job_id, status: null, at: 0, user_id: null, tacc_system: null, job_type: null };
      state.jobs.set(event.job_id, job);
    }
    if (event.user_id) job.user_id = event.user_id;
    if (event.tacc_system) job.tacc_system = event.tacc_system;
    if (event.job_type) job.job_type = event.job_type;
    var status = statusOf(event);
    if (status && at >= job.at) {   // events of one job may be re-sent (resume): newest wins
      job.status = status;
      job.at = at;
      job.fresh = true;
    }
    if (event.event_type === "JobFailed") {
      addFailure({
        event_id: event.event_id, job_id: event.job_id, user_id: event.user_id,
        error_code: event.error_code, error_message: event.error_message,
        retriable: !!event.retriable, at: at
      });
    }
    if (state.jobs.size > MAX_JOBS_KEPT) trimJobs();
    statsSoon();
  }

  function trimJobs() {
    var sorted = Array.from(state.jobs.values()).sort(function (a, b) { return b.at - a.at; });
    sorted.slice(MAX_JOBS_KEPT).forEach(function (job) { state.jobs.delete(job.job_id); });
  }

  function addFailure(f) {
    if (!f.event_id || state.failureIds.has(f.event_id)) return;
    state.failureIds.add(f.event_id);
    state.failures.push(f);
    state.failures.sort(function (a, b) { return b.at - a.at; });
    state.failures = state.failures.slice(0, MAX_FAILURES);
  }

  function applySnapshot(list) {
    // GET /api/jobs items are job_state values: {job_id, status, user_id, updated_at (ms),
    // last_event_id, last_error: {code, message}, ...}. They fill in what the feed did not
    // deliver (jobs from before the page opened, partitions a resume could not name).
    list.forEach(function (item) {
      if (!item || !item.job_id) return;
      var at = timeMs(item.updated_at) || 0;
      var job = state.jobs.get(item.job_id);
      if (!job) {
        job = { job_id: item.job_id, status: null, at: 0, user_id: null, tacc_system: null, job_type: null };
        state.jobs.set(item.job_id, job);
      }
      job.user_id = job.user_id || item.user_id || null;
      job.tacc_system = job.tacc_system || item.tacc_system || null;
      job.job_type = job.job_type || item.job_type || null;
      if (item.status && (at > job.at || !job.status)) {   // only when newer than what the feed said
        job.status = item.status;
        job.at = at;
      }
      if (item.status === "FAILED" && item.last_error && item.last_event_id) {
        addFailure({
          event_id: item.last_event_id, job_id: item.job_id, user_id: item.user_id,
          error_code: item.last_error.code, error_message: item.last_error.message,
          retriable: !!item.last_failure_retriable, at: at
        });
      }
    });
    if (state.jobs.size > MAX_JOBS_KEPT) trimJobs();
  }

  // ---------------------------------------------------------------- alerts

  function applyAlert(event) {
    var id = event.alert_id || event.event_id;
    if (!id) return;
    var prev = state.alerts.get(id);
    var at = timeMs(event.timestamp) || Date.now();
    if (prev && prev.at > at) return;
    state.alerts.set(id, {
      alert_id: id, component: event.component, rule: event.rule, severity: event.severity || "INFO",
      state: event.state || "FIRING", message: event.message, job_id: event.job_id, at: at
    });
    if (state.alerts.size > MAX_ALERTS) {
      var oldest = Array.from(state.alerts.values()).sort(function (a, b) { return a.at - b.at; })[0];
      state.alerts.delete(oldest.alert_id);
    }
  }

  // ---------------------------------------------------------------- HTTP polling

  function api(path) {
    return fetch(path, {
      headers: { "Authorization": "Bearer " + state.token, "Accept": "application/json" },
      cache: "no-store"
    }).then(function (response) {
      if (response.status === 401) throw new Error("not authorised (401)");
      if (response.status === 403) throw new Error("forbidden (403)");
      if (response.status === 404) throw new Error("unavailable (404)");
      if (!response.ok) throw new Error("unavailable (HTTP " + response.status + ")");
      return response.json();
    });
  }

  function gathered(path) {
    return path + (path.indexOf("?") < 0 ? "?" : "&") + "allow_partial=true";
  }

  function partialNote(data) {
    if (!data || data.partial !== true) return "";
    var missing = Array.isArray(data.missing_partitions) ? data.missing_partitions.join(", ") : "?";
    return "partial: partitions " + missing + " did not answer";
  }

  function setSource(panel, text) {
    state.sources[panel] = text;
    scheduleRender();
  }

  function pollStats() {
    if (!state.token) return Promise.resolve();
    return api(gathered("/api/stats")).then(function (data) {
      var counts = data.counts || data.by_status || data.jobs_by_status || data.status_counts || null;
      if (!counts && data.jobs && typeof data.jobs === "object" && !Array.isArray(data.jobs)) {
        counts = data.jobs.by_status || data.jobs.counts || data.jobs;
      }
      state.serverCounts = counts && typeof counts === "object" ? counts : null;
      state.dlq = data.dlq || data.dlq_sizes || data.dead_letters || null;
      setSource("counts", state.serverCounts ? partialNote(data) : "unavailable (no counts in /api/stats)");
    }).catch(function (err) {
      state.serverCounts = null;
      state.dlq = null;
      setSource("counts", err.message + " — counting the live feed");
    });
  }

  function pollJobs() {
    if (!state.token) return Promise.resolve();
    return api(gathered("/api/jobs")).then(function (data) {
      var list = Array.isArray(data) ? data : (data.jobs || data.items || []);
      applySnapshot(Array.isArray(list) ? list : []);
      setSource("jobs", partialNote(data));
    }).catch(function (err) {
      setSource("jobs", "job list " + err.message + " — live feed only");
    });
  }

  function pollGpus() {
    if (!state.token) return Promise.resolve();
    return api(gathered("/api/metrics/gpus")).then(function (data) {
      state.gpus = Array.isArray(data.gpus) ? data.gpus : [];
      setSource("heatmap", partialNote(data));
    }).catch(function (err) {
      setSource("heatmap", err.message + " — retrying");
    });
  }

  function every(fn, ms) {
    fn();
    var timer = setInterval(fn, ms);
    state.pollers.push(timer);
  }

  function startPolling() {
    stopPolling();
    every(pollStats, STATS_EVERY_MS);
    every(pollJobs, JOBS_EVERY_MS);
    every(pollGpus, GPUS_EVERY_MS);
  }

  function stopPolling() {
    state.pollers.forEach(clearInterval);
    state.pollers = [];
  }

  function statsSoon() {
    // a live lifecycle event changed the counts: refresh them shortly (coalesced)
    if (state.statsSoon) return;
    state.statsSoon = setTimeout(function () { state.statsSoon = null; pollStats(); }, 700);
  }

  // ---------------------------------------------------------------- rendering

  function scheduleRender() {
    if (state.renderQueued) return;
    state.renderQueued = true;
    // a timer, not requestAnimationFrame: frames are not delivered to background tabs
    setTimeout(function () {
      state.renderQueued = false;
      render();
    }, 50);
  }

  function liveCounts() {
    var counts = {};
    state.jobs.forEach(function (job) {
      if (job.status) counts[job.status] = (counts[job.status] || 0) + 1;
    });
    return counts;
  }

  function renderSource(id, text) {
    var node = $(id);
    node.textContent = text ? "— " + text : "";
    node.className = text ? "source unavailable" : "source";
  }

  function renderCounts() {
    var counts = state.serverCounts || liveCounts();
    var box = $("counts");
    box.textContent = "";
    STATUSES.forEach(function (status) {
      var tile = el("div", "count status-" + status);
      tile.setAttribute("data-status", status);
      tile.appendChild(el("span", "n", Number(counts[status] || 0)));
      tile.appendChild(el("span", "label", status));
      box.appendChild(tile);
    });
    renderSource("counts-source", state.sources.counts);
    var dlq = $("dlq");
    dlq.textContent = "";
    if (state.dlq && typeof state.dlq === "object") {
      var parts = Object.keys(state.dlq).sort().map(function (k) {
        var v = state.dlq[k];
        return k + ": " + (v && typeof v === "object" ? (v.size !== undefined ? v.size : JSON.stringify(v)) : v);
      });
      dlq.textContent = "dead letters — " + (parts.length ? parts.join(", ") : "none");
    }
  }

  function renderJobs() {
    var wantStatus = $("filter-status").value;
    var wantUser = $("filter-user").value.trim();
    var rows = Array.from(state.jobs.values()).filter(function (job) {
      return (!wantStatus || job.status === wantStatus) && (!wantUser || job.user_id === wantUser);
    }).sort(function (a, b) { return b.at - a.at; }).slice(0, MAX_JOBS_SHOWN);
    var body = $("jobs");
    body.textContent = "";
    rows.forEach(function (job) {
      var tr = el("tr", "job-row" + (job.fresh ? " fresh" : ""));
      job.fresh = false;
      tr.setAttribute("data-job-id", job.job_id);
      tr.setAttribute("data-status", job.status || "");
      tr.appendChild(el("td", "job-id", job.job_id));
      tr.appendChild(el("td", "user", job.user_id || ""));
      var cell = el("td", "status-cell");
      cell.appendChild(el("span", "status status-" + (job.status || "UNKNOWN"), job.status || "?"));
      tr.appendChild(cell);
      tr.appendChild(el("td", "system", job.tacc_system || ""));
      tr.appendChild(el("td", "type", job.job_type || ""));
      tr.appendChild(el("td", "updated", job.at ? timeText(job.at) : ""));
      body.appendChild(tr);
    });
    if (!rows.length) {
      var empty = el("tr", "empty");
      var td = el("td", null, state.jobs.size ? "no job matches the filter" : "no jobs yet");
      td.colSpan = 6;
      empty.appendChild(td);
      body.appendChild(empty);
    }
    renderSource("jobs-source", state.sources.jobs);
  }

  function renderFailures() {
    var list = $("failures");
    list.textContent = "";
    if (!state.failures.length) list.appendChild(el("li", "empty", "no failures"));
    state.failures.forEach(function (f) {
      var li = el("li", "failure");
      li.setAttribute("data-job-id", f.job_id);
      li.appendChild(el("span", "code", f.error_code || "FAILED"));
      li.appendChild(el("span", "job", f.job_id));
      li.appendChild(el("span", "meta",
        (f.error_message || "") + (f.retriable ? " (retriable)" : "") + " · " + (f.user_id || "") +
        " · " + timeText(f.at)));
      list.appendChild(li);
    });
  }

  function renderAlerts() {
    var list = $("alerts");
    list.textContent = "";
    state.gaps.forEach(function (g) {
      list.appendChild(el("li", "gap", "gap in " + g.channel + ": " + g.reason + " (" + timeText(g.at) + ")"));
    });
    var alerts = Array.from(state.alerts.values()).sort(function (a, b) { return b.at - a.at; });
    if (!alerts.length && !state.gaps.length) list.appendChild(el("li", "empty", "no alerts"));
    alerts.forEach(function (a) {
      var li = el("li", "alert severity-" + a.severity + " state-" + a.state);
      li.setAttribute("data-alert-id", a.alert_id);
      li.appendChild(el("span", "sev", a.severity + (a.state === "RESOLVED" ? " resolved" : "")));
      li.appendChild(el("span", "msg", a.message || a.rule || ""));
      li.appendChild(el("span", "meta", (a.component || "") + " · " + (a.rule || "") +
        (a.job_id ? " · job " + a.job_id : "") + " · " + timeText(a.at)));
      list.appendChild(li);
    });
    renderSource("alerts-source", "");
  }

  function heatColour(pct) {
    // 0 % blue-grey … 50 % amber … 100 % red
    var p = Math.max(0, Math.min(100, Number(pct) || 0)) / 100;
    var hue = 210 - 210 * p;
    return "hsl(" + hue.toFixed(0) + ", 70%, " + (30 + 15 * p).toFixed(0) + "%)";
  }

  function renderHeatmap() {
    var box = $("heatmap");
    box.textContent = "";
    renderSource("heatmap-source", state.sources.heatmap);
    var gpus = state.gpus;
    if (!gpus || !gpus.length) {
      box.appendChild(el("p", "empty", gpus ? "no GPU samples yet" : "waiting for /api/metrics/gpus"));
      return;
    }
    var nodes = {}, ids = {};
    gpus.forEach(function (g) {
      var node = String(g.node), id = g.gpu_id === null || g.gpu_id === undefined ? "-" : String(g.gpu_id);
      (nodes[node] || (nodes[node] = {}))[id] = g;
      ids[id] = true;
    });
    var columns = Object.keys(ids).sort(function (a, b) { return (Number(a) - Number(b)) || a.localeCompare(b); });
    var table = el("table");
    var head = el("tr");
    head.appendChild(el("th", null, "node \\ gpu"));
    columns.forEach(function (c) { head.appendChild(el("th", null, c)); });
    table.appendChild(head);
    Object.keys(nodes).sort().forEach(function (node) {
      var tr = el("tr");
      tr.setAttribute("data-node", node);
      tr.appendChild(el("th", null, node));
      columns.forEach(function (c) {
        var g = nodes[node][c];
        var td = el("td", "cell" + (g ? "" : " none"), g ? Math.round(Number(g.gpu_pct) || 0) + "%" : "–");
        if (g) {
          td.style.backgroundColor = heatColour(g.gpu_pct);
          td.setAttribute("data-gpu", c);
          td.setAttribute("data-pct", String(g.gpu_pct));
          td.title = node + " gpu " + c + ": " + g.gpu_pct + "%" + (g.job_id ? " (job " + g.job_id + ")" : "") +
            (g.timestamp ? " at " + timeText(g.timestamp) : "");
        }
        tr.appendChild(td);
      });
      table.appendChild(tr);
    });
    box.appendChild(table);
    box.appendChild(el("p", "legend", "colour: 0 % blue → 100 % red; latest sample per GPU"));
  }

  function render() {
    renderCounts();
    renderJobs();
    renderFailures();
    renderAlerts();
    renderHeatmap();
  }

  // ---------------------------------------------------------------- start

  function start() {
    $("token-form").addEventListener("submit", function (event) {
      event.preventDefault();
      var token = $("token-input").value.trim();
      $("token-input").value = "";
      if (token) useToken(token);
    });
    $("sign-out").addEventListener("click", function () { forgetToken("token forgotten"); });
    $("filter-status").addEventListener("change", scheduleRender);
    $("filter-user").addEventListener("input", scheduleRender);
    window.addEventListener("hashchange", function () {
      var token = readToken();
      if (token && token !== state.token) useToken(token);
    });
    // For debugging from the console and for the browser test: a read-only view of the state.
    window.cosmicDashboard = {
      connection: function () { return state.connection; },
      subscribed: function () { return Object.keys(state.subscribed).sort(); },
      positions: function () { return JSON.parse(JSON.stringify(state.positions)); },
      jobCount: function () { return state.jobs.size; }
    };
    render();
    var token = readToken();
    if (token) useToken(token);
    else { setConnection("disconnected", "no token"); showTokenForm(""); }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
