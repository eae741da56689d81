// Draws the total lag of each consumer group over time (from /api/overview) as SVG lines,
// and refreshes the page's content in place every data-refresh-s seconds.
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#9a6700", "#bf3989", "#57606a"];

  function el(name, attrs) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    return node;
  }

  function draw(data) {
    const svg = document.getElementById("lag-chart");
    const legend = document.getElementById("lag-legend");
    if (!svg) return;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    legend.textContent = "";
    const width = +svg.getAttribute("width"), height = +svg.getAttribute("height");
    const pad = { left: 60, right: 10, top: 10, bottom: 25 };
    const series = Object.entries(data.history).filter(([, pts]) => pts.length > 0);
    const all = series.flatMap(([, pts]) => pts);
    if (all.length === 0) {
      const t = el("text", { x: pad.left, y: height / 2 });
      t.textContent = "no lag samples yet";
      svg.appendChild(t);
      return;
    }
    const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
    const ymax = Math.max(1, ...all.map((p) => p[1]));
    const x = (t) => pad.left + (t1 === t0 ? 0 : (t - t0) / (t1 - t0)) * (width - pad.left - pad.right);
    const y = (v) => height - pad.bottom - (v / ymax) * (height - pad.top - pad.bottom);
    svg.appendChild(el("line", { x1: pad.left, y1: y(0), x2: width - pad.right, y2: y(0), stroke: "#999" }));
    svg.appendChild(el("line", { x1: pad.left, y1: pad.top, x2: pad.left, y2: y(0), stroke: "#999" }));
    const top = el("text", { x: 4, y: pad.top + 10, "font-size": "11" });
    top.textContent = String(ymax);
    svg.appendChild(top);
    const span = el("text", { x: pad.left, y: height - 6, "font-size": "11" });
    span.textContent = `last ${Math.round((t1 - t0) / 1000)} s`;
    svg.appendChild(span);
    series.forEach(([group, pts], i) => {
      const color = COLORS[i % COLORS.length];
      const line = el("polyline", {
        points: pts.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "),
        fill: "none", stroke: color, "stroke-width": "2",
        "data-group": group, "data-last-lag": String(pts[pts.length - 1][1]),
        "data-points": String(pts.length),
      });
      svg.appendChild(line);
      const item = document.createElement("span");
      item.style.color = color;
      item.style.marginRight = "1rem";
      item.dataset.group = group;
      item.textContent = `■ ${group}: ${pts[pts.length - 1][1]}`;
      legend.appendChild(item);
    });
  }

  async function refresh() {
    try {
      const [page, api] = await Promise.all([fetch("/"), fetch("/api/overview")]);
      const doc = new DOMParser().parseFromString(await page.text(), "text/html");
      const fresh = doc.querySelector("main");
      if (fresh) document.querySelector("main").replaceWith(fresh);
      draw(await api.json());
    } catch (err) {
      console.warn("refresh failed", err);
    }
  }

  fetch("/api/overview").then((r) => r.json()).then(draw);
  const every = parseFloat(document.body.dataset.refreshS || "10");
  setInterval(refresh, Math.max(every, 1) * 1000);
})();
