"use strict";
// The monitoring page: renders /api/state and follows /api/events (server-sent events).
(function () {
  const $ = (id) => document.getElementById(id);
  const fmt = (v, d = 2) => (v === null || v === undefined) ? "–" :
    Number(v).toLocaleString("en-US", {minimumFractionDigits: d, maximumFractionDigits: d});
  const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
  const signed = (el, v) => { el.textContent = fmt(v); el.className = "big " + (v > 0 ? "up" : v < 0 ? "down" : ""); };
  const rows = (id, items, cells) => {
    $(id).tBodies[0].innerHTML = items.map((it) => "<tr>" + cells(it).map((c) => "<td>" + c + "</td>").join("") + "</tr>").join("");
  };
  let chart = null;

  function drawChart(curve) {
    const xs = curve.map((p) => p[0]), ys = curve.map((p) => p[1]);
    if (!window.uPlot) return;
    if (!chart) {
      const width = Math.max(300, $("chart").clientWidth - 12);
      chart = new uPlot({width: width, height: 220, legend: {show: false},
        scales: {x: {time: true}},
        axes: [{stroke: "#7b8794", grid: {stroke: "#222b36"}}, {stroke: "#7b8794", grid: {stroke: "#222b36"}}],
        series: [{}, {label: "P&L", stroke: "#58a6ff", width: 2, fill: "rgba(88,166,255,0.12)"}]},
        [xs, ys], $("chart"));
    } else {
      chart.setData([xs, ys]);
    }
  }

  function render(s) {
    document.body.dataset.version = s.version;
    $("strategy").textContent = s.strategy || "";
    $("mode").textContent = s.mode || "";
    $("run").textContent = "run " + (s.run_id || "");
    $("updated").textContent = "updated " + (s.updated || "") + (s.final ? " (run ended)" : "");
    const conn = s.connection || {};
    $("conn").textContent = conn.connected ? "connected" : "DISCONNECTED";
    $("conn").className = "badge " + (conn.connected ? "ok" : "bad");
    const kill = s.kill;
    $("halted").hidden = !(kill && kill.halted);
    $("halted").textContent = kill && kill.halted ? "HALTED (" + kill.state + ")" : "";
    signed($("pnl"), s.pnl);
    $("value").textContent = fmt(s.value);
    $("cash").textContent = fmt(s.cash);
    const cv = s.cvar;
    $("cvar").textContent = cv ? (cv.units === "dollars" ? fmt(cv.es_dollars) : fmt((cv.es ?? NaN) * 100, 3) + "%") : "–";
    $("cvarlim").textContent = cv ? ("warn " + (cv.warning ?? "–") + " / crit " + (cv.critical ?? "–") + " " +
      Object.entries(cv.levels || {}).map(([k, v]) => k + ":" + v).join(" ")) : "";
    const ex = s.execution;
    $("exec").innerHTML = ex ? ("orders " + ex.orders + ", filled " + ex.filled_orders +
      "<br>slippage " + fmt(ex.slippage_bps, 1) + " bps, shortfall " + fmt(ex.shortfall) +
      "<br>limit fill rate " + (ex.limit_fill_rate === null ? "–" : fmt(ex.limit_fill_rate * 100, 0) + "%")) : "–";
    const risk = Object.entries(s.risk || {});
    $("risk").innerHTML = risk.length ? risk.map(([k, v]) => '<span class="' + (v >= 1 ? "critical" : v >= 0.5 ? "warning" : "") +
      '">' + esc(k) + " " + fmt(v * 100, 0) + "%</span>").join("<br>") : "–";
    rows("positions", s.positions || [], (p) => [esc(p.data), fmt(p.size, 0), fmt(p.entry), fmt(p.current),
      '<span class="' + (p.unrealized > 0 ? "up" : p.unrealized < 0 ? "down" : "") + '">' + fmt(p.unrealized) + "</span>"]);
    rows("orders", s.orders || [], (o) => [o.ref, esc(o.data), o.side, fmt(o.size, 0), esc(o.type), fmt(o.price), esc(o.status)]);
    rows("fills", (s.fills || []).slice().reverse(), (f) => [esc((f.time || "").slice(11, 19)), f.ref, esc(f.data), f.side,
      fmt(f.size, 0), fmt(f.price), fmt(f.decision_price), fmt(f.slippage_bps, 1), fmt(f.latency_fill_s, 3)]);
    rows("feeds", s.feeds || [], (d) => [esc(d.name), '<span class="' + (d.stale ? "stale" : "") + '">' + esc(d.status) +
      (d.stale ? " (stale)" : "") + "</span>", d.bars, esc((d.last_bar || "").slice(0, 19)), fmt(d.age_s, 1)]);
    $("alerts").innerHTML = (s.alerts || []).slice().reverse().map((a) =>
      '<li class="' + esc(a.level) + '">' + esc((a.at || "").slice(0, 19).replace("T", " ")) + " " + esc(a.subject) +
      (a.context && a.context.reason ? " – " + esc(a.context.reason) : "") + "</li>").join("") || "<li>none</li>";
    $("stop").hidden = !s.stop_enabled;
    drawChart(s.pnl_curve || []);
  }

  $("stop").addEventListener("click", async () => {
    const token = window.prompt("Stop token (BTLIVE_MONITOR_TOKEN):");
    if (!token) return;
    const r = await fetch("/api/stop", {method: "POST", headers: {Authorization: "Bearer " + token}});
    window.alert(r.ok ? "stopping the run" : "refused: " + r.status);
  });

  fetch("/api/state").then((r) => r.json()).then(render).catch(() => {});
  const source = new EventSource("/api/events");
  source.addEventListener("state", (ev) => render(JSON.parse(ev.data)));
})();
