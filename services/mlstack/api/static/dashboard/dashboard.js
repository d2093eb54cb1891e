// mlstack operator dashboard: hand-written, no dependencies, no CDN.
// The API token is typed into the page, sent only as an Authorization header to /dashboard/data,
// never put in a URL, and kept in sessionStorage only when the operator asks (this tab only).
(function () {
  "use strict";
  var REFRESH_MS = 5000;
  var KEY = "mlstack.dashboard.token";
  var token = sessionStorage.getItem(KEY) || "";
  var timer = null;
  var $ = function (id) { return document.getElementById(id); };

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    (children || []).forEach(function (c) { node.append(c instanceof Node ? c : document.createTextNode(String(c))); });
    return node;
  }

  function fmtSeconds(s) {
    if (s === null || s === undefined) return "—";
    return s < 1 ? Math.round(s * 1000) + " ms" : s.toFixed(2) + " s";
  }

  // A small SVG line chart of one series (null points are skipped).
  function sparkline(values, cls, caption, last) {
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 120 40");
    svg.setAttribute("preserveAspectRatio", "none");
    var nums = values.filter(function (v) { return v !== null; });
    var max = Math.max.apply(null, nums.concat([1e-9]));
    var points = [];
    values.forEach(function (v, i) {
      if (v === null) return;
      var x = (i / Math.max(1, values.length - 1)) * 120;
      var y = 38 - (v / max) * 34;
      points.push(x.toFixed(1) + "," + y.toFixed(1));
    });
    var line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.join(" "));
    svg.append(line);
    if (points.length) {  // the latest point as a dot, so a lone minute shows too
      var xy = points[points.length - 1].split(",");
      var dot = document.createElementNS(ns, "circle");
      dot.setAttribute("cx", xy[0]); dot.setAttribute("cy", xy[1]); dot.setAttribute("r", "1.8");
      svg.append(dot);
    }
    return el("figure", { "class": "chart " + cls, "data-chart": cls }, [svg, el("figcaption", {}, [caption + ": " + last])]);
  }

  function figure(label, value, cls) {
    return el("div", { "class": "figure " + cls }, [el("b", {}, [value]), el("span", {}, [label])]);
  }

  function renderModel(m) {
    var rows = m.workers.map(function (w) {
      return el("tr", { "class": "worker-row", "data-worker": w.worker_id }, [
        el("td", {}, [w.worker_id]),
        el("td", { "class": "loaded-version" }, [w.loaded_version || "—"]),
        el("td", {}, [w.production_version || "—"]),
        el("td", { "class": "state state-" + w.state }, [w.state]),
      ]);
    });
    var table = el("table", {}, [
      el("thead", {}, [el("tr", {}, [el("th", {}, ["worker"]), el("th", {}, ["carregada"]), el("th", {}, ["produção"]), el("th", {}, ["estado"])])]),
      el("tbody", {}, rows.length ? rows : [el("tr", {}, [el("td", { colspan: "4", "class": "empty" }, ["nenhum worker"])])]),
    ]);
    var s = m.series;
    var perMin = s.jobs;
    return el("section", { "class": "model", "data-model": m.model }, [
      el("h2", {}, [m.model, el("span", { "class": "version" }, ["produção: " + (m.production_version || "—")])]),
      el("div", { "class": "figures" }, [
        figure("na fila", m.queue_depth, "queue-depth"),
        figure("consumidores", m.consumers === null ? "?" : m.consumers, "consumers"),
        figure("jobs/min", m.jobs_per_min, "jobs-per-min"),
        figure("jobs na última hora", m.jobs_last_hour, "jobs-last-hour"),
        figure("p95 (1 h)", fmtSeconds(m.p95_s_last_hour), "p95"),
      ]),
      table,
      el("div", { "class": "charts" }, [
        sparkline(perMin, "jobs", "jobs/min", perMin[perMin.length - 1]),
        sparkline(s.p95_s, "latency", "p95", fmtSeconds(s.p95_s[s.p95_s.length - 1])),
        sparkline(s.errors, "errors", "erros (1 h)", m.errors_last_hour),
      ]),
    ]);
  }

  function render(data) {
    var main = $("models");
    var models = data.models.map(renderModel);
    main.replaceChildren.apply(main, models.length ? models : [el("p", { "class": "empty" }, ["Nenhum modelo registrado."])]);
    main.hidden = false;
    $("updated").textContent = "atualizado " + new Date(data.generated_at * 1000).toLocaleTimeString();
  }

  function showLogin(message) {
    clearTimeout(timer);
    $("login").hidden = false;
    $("models").hidden = true;
    $("logout").hidden = true;
    $("login-error").textContent = message || "";
  }

  function refresh() {
    clearTimeout(timer);
    fetch("/dashboard/data", { headers: { "Authorization": "Bearer " + token }, cache: "no-store", redirect: "error" })
      .then(function (r) {
        if (r.status === 401) { token = ""; sessionStorage.removeItem(KEY); throw new Error("Token recusado."); }
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (data) {
        $("login").hidden = true;
        $("logout").hidden = false;
        render(data);
        timer = setTimeout(refresh, REFRESH_MS);
      })
      .catch(function (err) {
        if (!token) { showLogin(err.message); return; }
        $("updated").textContent = "falha ao atualizar (" + err.message + "); tentando de novo";
        timer = setTimeout(refresh, REFRESH_MS);
      });
  }

  $("login").addEventListener("submit", function (ev) {
    ev.preventDefault();
    token = $("token").value.trim();
    $("token").value = "";
    if ($("remember").checked) sessionStorage.setItem(KEY, token); else sessionStorage.removeItem(KEY);
    refresh();
  });
  $("logout").addEventListener("click", function () { token = ""; sessionStorage.removeItem(KEY); showLogin(""); });

  if (token) refresh(); else showLogin("");
})();
