// The board's pages: one EventSource per page, re-rendered on every snapshot. No framework,
// no build step; charts are inline SVG drawn here. Customer text only ever goes through
// textContent.
(function () {
  "use strict";
  var LABEL = { csat: "CSAT", nps: "NPS", ces: "CES" };
  var UNIT = { csat: "%", nps: "", ces: " / 7" };
  var DIGITS = { csat: 1, nps: 1, ces: 2 };
  var params = new URLSearchParams(location.search);
  var win = params.get("window") || "24h";
  var token = params.get("token") || "";
  var page = document.body.getAttribute("data-page");
  window.__board = { snapshots: 0, firstRenderMs: null };

  function el(tag, attrs) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "cls") e.className = attrs[k];
      else e.setAttribute(k, attrs[k]);
    }
    for (var i = 2; i < arguments.length; i++) if (arguments[i] != null) e.appendChild(arguments[i]);
    return e;
  }
  function fmt(metric, v) { return v == null ? "–" : Number(v).toFixed(DIGITS[metric]); }
  function svgEl(tag, attrs) {
    var e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }
  function ago(secs) {
    if (secs == null) return "none in the last 2 days";
    if (secs < 90) return secs + " s ago";
    if (secs < 5400) return Math.round(secs / 60) + " min ago";
    return Math.round(secs / 3600) + " h ago";
  }

  // Points [[ts, value, n], ...] over [start, end] as a polyline; y axis from the metric's range.
  function chart(points, metric, start, end, cls, w, h) {
    var lo = metric === "csat" ? 0 : metric === "nps" ? -100 : 1;
    var hi = metric === "csat" ? 100 : metric === "nps" ? 100 : 7;
    var svg = svgEl("svg", { "class": cls, viewBox: "0 0 " + w + " " + h, preserveAspectRatio: "none", role: "img",
      "aria-label": LABEL[metric] + " trend" });
    var mid = svgEl("line", { x1: 0, x2: w, y1: h / 2, y2: h / 2, stroke: "#e4e7ec", "stroke-dasharray": "3 3" });
    svg.appendChild(mid);
    if (!points || !points.length) return svg;
    var xy = points.map(function (p) {
      var x = end > start ? (p[0] - start) / (end - start) * w : w / 2;
      var y = h - (p[1] - lo) / (hi - lo) * (h - 6) - 3;
      return [Math.max(0, Math.min(w, x)), y];
    });
    svg.appendChild(svgEl("polyline", { points: xy.map(function (p) { return p[0].toFixed(1) + "," + p[1].toFixed(1); }).join(" ") }));
    if (cls === "trend") xy.forEach(function (p, i) {
      var c = svgEl("circle", { cx: p[0], cy: p[1], r: 2.5 });
      var t = svgEl("title", {});
      t.textContent = new Date(points[i][0] * 1000).toLocaleString() + ": " + fmt(metric, points[i][1]) + " (" + points[i][2] + " responses)";
      c.appendChild(t);
      svg.appendChild(c);
    });
    return svg;
  }

  function windows() {
    var nav = document.getElementById("windows");
    nav.textContent = "";
    ["1h", "24h", "7d"].forEach(function (w) {
      var p = new URLSearchParams(location.search);
      p.set("window", w);
      nav.appendChild(el("a", { href: "?" + p.toString(), cls: w === win ? "on" : "", text: "last " + w }));
    });
  }

  function health(h, scope) {
    var box = document.getElementById("health");
    box.textContent = "";
    box.appendChild(el("span", null, document.createTextNode("Newest landed event " + scope + ": "),
      el("b", { id: "fresh", text: ago(h.freshness_secs) })));
    box.appendChild(el("span", null, document.createTextNode("Orphan ratings" + (scope === "of this team" ? " of this team" : "") + ", last " + win + ": "),
      el("b", { id: "orphans", text: String(h.orphans) })));
    box.appendChild(el("span", null, document.createTextNode("Unowned events (no team claims them), last " + win + ": "),
      el("b", { id: "unowned", text: String(h.unowned) })));
  }

  function renderIndex(s) {
    var tbody = document.querySelector("#teams tbody");
    tbody.textContent = "";
    var end = Math.floor(s.generated_at_ms / 1000), start = end - s.span_secs;
    s.teams.forEach(function (t) {
      var tr = el("tr", { id: "row-" + t.team },
        el("td", null, el("a", { href: "/team/" + encodeURIComponent(t.team) + "?window=" + win, text: t.name })));
      ["csat", "nps", "ces"].forEach(function (m) {
        var now = t.metrics[m].now;
        var td = el("td", { cls: "num" },
          el("span", { id: "idx-" + t.team + "-" + m, text: fmt(m, now && now.value) }),
          el("span", { cls: "unit", text: now ? UNIT[m] : "" }), document.createElement("br"),
          el("span", { cls: "n", id: "idx-" + t.team + "-" + m + "-n", text: (now ? now.responses : 0) + " responses" }),
          t.metrics[m].delta == null ? null : el("span", { cls: "delta " + (t.metrics[m].delta < 0 ? "down" : "up"),
            id: "idx-" + t.team + "-" + m + "-delta",
            text: " " + (t.metrics[m].delta >= 0 ? "▲ +" : "▼ ") + fmt(m, t.metrics[m].delta) }));
        tr.appendChild(td);
      });
      tr.appendChild(el("td", null, chart(t.trend.csat, "csat", start, end, "spark", 160, 32)));
      tbody.appendChild(tr);
    });
    health(s.health, "anywhere");
  }

  function card(m, x, s) {
    var now = x.now, prev = x.prev;
    var delta = x.delta;
    var d = el("span", { id: m + "-delta", cls: "delta " + (delta == null ? "" : delta < 0 ? "down" : "up"),
      text: delta == null ? "" : (delta >= 0 ? "▲ +" : "▼ ") + fmt(m, delta) });
    return el("div", { cls: "card", id: "card-" + m },
      el("h3", { text: LABEL[m] + " · last " + s.window }),
      el("div", null, el("span", { cls: "big", id: m + "-now", text: fmt(m, now && now.value) }),
        el("span", { cls: "unit", text: now ? UNIT[m] : "" })),
      el("div", { cls: "sub" }, el("span", { id: m + "-now-n", text: String(now ? now.responses : 0) }),
        document.createTextNode(" responses")),
      el("div", { cls: "sub" }, document.createTextNode("previous " + s.window + ": "),
        el("span", { id: m + "-prev", text: fmt(m, prev && prev.value) }),
        document.createTextNode(" on "), el("span", { id: m + "-prev-n", text: String(prev ? prev.responses : 0) }),
        document.createTextNode(" responses "), d));
  }

  function renderTeam(s) {
    document.title = s.name + " · feedback board";
    document.getElementById("team-name").textContent = s.name;
    var cards = document.getElementById("cards");
    cards.textContent = "";
    ["csat", "nps", "ces"].forEach(function (m) { cards.appendChild(card(m, s.metrics[m], s)); });

    var charts = document.getElementById("charts");
    charts.textContent = "";
    var end = Math.floor(s.generated_at_ms / 1000), start = end - s.span_secs;
    ["csat", "nps", "ces"].forEach(function (m) {
      charts.appendChild(el("div", { cls: "chart", id: "chart-" + m },
        el("h4", { text: LABEL[m] + " per " + s.grain }), chart(s.trend[m], m, start, end, "trend", 300, 120)));
    });

    var bd = document.getElementById("breakdowns");
    bd.textContent = "";
    ["channel", "product", "kind"].forEach(function (dim) {
      var rows = (s.breakdown[dim] || []);
      var tb = el("tbody");
      rows.forEach(function (r) {
        tb.appendChild(el("tr", null, el("td", { text: r.value || "(none)" }), el("td", { text: LABEL[r.metric] }),
          el("td", { cls: "num", text: fmt(r.metric, r.score) }), el("td", { cls: "num n", text: String(r.responses) })));
      });
      if (!rows.length) tb.appendChild(el("tr", null, el("td", { colspan: 4, cls: "n", text: "no responses in this window" })));
      bd.appendChild(el("div", null, el("h4", { text: "by " + dim }),
        el("table", { id: "bd-" + dim }, el("thead", null, el("tr", null, el("th", { text: dim }), el("th", { text: "metric" }),
          el("th", { cls: "num", text: "score" }), el("th", { cls: "num", text: "n" }))), tb)));
    });

    var box = document.getElementById("comments");
    box.textContent = "";
    var c = s.comments;
    if (c.access === "restricted" || c.access === "refused") {
      var f = el("form", null, el("input", { type: "password", name: "token", placeholder: "team token", "aria-label": "team token" }),
        el("button", { type: "submit", text: "Show comments" }));
      f.addEventListener("submit", function (ev) {
        ev.preventDefault();
        var p = new URLSearchParams(location.search);
        p.set("token", f.querySelector("input").value);
        location.search = p.toString();
      });
      box.appendChild(el("div", { cls: "restricted", id: "comments-" + c.access },
        el("p", { text: c.access === "refused" ? "That token is not this team's. The numbers above stay open to everyone."
          : "This team shows its customers' comments to its members only. The numbers above stay open to everyone." }), f));
    } else if (!c.items.length) {
      box.appendChild(el("p", { cls: "n", text: "No comments yet." }));
    } else {
      c.items.forEach(function (it) {
        var pos = it.metric === "csat" ? it.score >= 4 : it.metric === "nps" ? it.score >= 9 : it.score >= 5;
        var neg = it.metric === "csat" ? it.score <= 2 : it.metric === "nps" ? it.score <= 6 : it.score <= 3;
        var ctx = [it.i_kind, it.i_product, it.i_channel || it.channel, it.i_service || it.service].filter(Boolean).join(" · ");
        box.appendChild(el("div", { cls: "comment", "data-rating": it.rating_id },
          el("div", { cls: "text" }, el("span", { cls: "score " + (pos ? "pos" : neg ? "neg" : ""), text: String(it.score) }),
            el("span", { cls: "words", text: it.comment })),
          el("div", { cls: "meta", text: LABEL[it.metric] + " · " + new Date(it.occurred_at_ms).toLocaleString() + " · " + ctx +
            (it.interaction_id ? " · " + it.interaction_id : "") + (it.orphan ? " · orphan (interaction never arrived)" : "") })));
      });
    }
    health(s.health, "of this team");
  }

  windows();
  var live = document.getElementById("live");
  var url;
  if (page === "team") {
    var team = decodeURIComponent(location.pathname.split("/").pop());
    url = "/events/team/" + encodeURIComponent(team) + "?window=" + encodeURIComponent(win) + (token ? "&token=" + encodeURIComponent(token) : "");
  } else {
    url = "/events?window=" + encodeURIComponent(win);
  }
  function show(s) {
    if (page === "team") renderTeam(s); else renderIndex(s);
    window.__board.snapshots++;
    if (window.__board.firstRenderMs == null) window.__board.firstRenderMs = performance.now();
    live.className = "live ok";
    live.textContent = "live · " + new Date(s.generated_at_ms).toLocaleTimeString();
  }
  var initial = JSON.parse(document.getElementById("initial").textContent || "null");
  if (initial) show(initial);
  var es = new EventSource(url);
  es.addEventListener("snapshot", function (ev) { show(JSON.parse(ev.data)); });
  es.addEventListener("problem", function (ev) {
    live.className = "live bad";
    live.textContent = "data source problem: " + ev.data;
  });
  es.onerror = function () { live.className = "live bad"; live.textContent = "reconnecting…"; };
})();
