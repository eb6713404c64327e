// Metric charts for the run and compare pages, drawn with uPlot (vendored).
// The server never sends more points than the chart is wide: a long series arrives as
// min/max buckets with their mean, and zooming in asks for the finer points of the
// visible range only. Nothing here builds HTML from data: labels go in as text.
(function () {
  "use strict";
  const root = document.getElementById("charts");
  if (!root || !window.uPlot) return;
  const runs = root.dataset.runs.split(",");
  const names = root.dataset.names ? JSON.parse(root.dataset.names) : runs;
  const keys = JSON.parse(root.dataset.keys);
  const api = root.dataset.api;
  const palette = ["#2457c5", "#d1495b", "#00798c", "#edae49", "#66a182", "#8d5a97", "#30343f", "#e76f51"];
  const state = { x: "step", smoothing: 0, log: false };
  const charts = [];

  function smooth(values, weight) {
    // Exponential moving average, debiased at the start (as TensorBoard draws it).
    if (!weight) return values;
    const out = new Array(values.length);
    let last = 0, n = 0;
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (v === null || !isFinite(v)) { out[i] = v; continue; }
      last = last * weight + (1 - weight) * v; n++;
      out[i] = last / (1 - Math.pow(weight, n));
    }
    return out;
  }

  async function fetchSeries(run, key, width, range) {
    const q = new URLSearchParams({ width: String(width), x: state.x });
    if (range) { q.set("lo", String(range[0])); q.set("hi", String(range[1])); }
    const r = await fetch(`${api}runs/${encodeURIComponent(run)}/metrics/${encodeURIComponent(key)}/chart?${q}`);
    if (!r.ok) throw new Error((await r.json()).message || r.statusText);
    return r.json();
  }

  function build(results) {
    // One table per run: [x, line(, band low, band high)], joined on x.
    const single = results.length === 1;
    const tables = results.map((d) => {
      const line = smooth(d.value, state.smoothing);
      return single && d.min ? [d.x, line, d.min, d.max] : [d.x, line];
    });
    return tables.length === 1 ? tables[0] : uPlot.join(tables);
  }

  function seriesOptions(key, results) {
    const series = [{}];
    results.forEach((d, i) => {
      series.push({ label: results.length === 1 ? key : names[i] || runs[i], stroke: palette[i % palette.length], width: 1.5, spanGaps: true, points: { show: d.x.length < 60 } });
      if (results.length === 1 && d.min) {
        series.push({ label: "min", stroke: "transparent", points: { show: false } });
        series.push({ label: "max", stroke: "transparent", points: { show: false } });
      }
    });
    return series;
  }

  function makeChart(key) {
    const box = document.createElement("div");
    box.className = "chart";
    const title = document.createElement("h3");
    title.textContent = key;
    const info = document.createElement("div");
    info.className = "muted";
    const body = document.createElement("div");
    box.append(title, body, info);
    root.append(box);
    const chart = { key, box, body, info, plot: null, loading: false, timer: null, full: null };

    chart.load = async function (range) {
      // A whole series at the width the page preloaded (when it did); a zoom at the
      // chart's own width.
      const width = range === undefined && root.dataset.width ? Number(root.dataset.width)
        : Math.max(200, Math.round(body.clientWidth || 460));
      chart.loading = true;
      try {
        const results = await Promise.all(runs.map((r) => fetchSeries(r, key, width, range)));
        const data = build(results);
        if (range === undefined) chart.full = [data[0][0], data[0][data[0].length - 1]];
        const shown = results.reduce((a, d) => a + d.x.length, 0);
        const total = results.reduce((a, d) => a + d.total, 0);
        info.textContent = `${shown.toLocaleString()} of ${total.toLocaleString()} points` +
          (results.some((d) => d.kind === "buckets") ? " (min/max buckets; zoom for detail)" : "");
        if (!chart.plot || range === undefined) {
          if (chart.plot) chart.plot.destroy();
          const opts = {
            width, height: 240,
            scales: { x: { time: state.x === "time" }, y: { distr: state.log ? 3 : 1 } },
            series: seriesOptions(key, results),
            bands: results.length === 1 && results[0].min ? [{ series: [3, 2], fill: "rgba(36,87,197,0.12)" }] : [],
            legend: { live: true },
            cursor: { drag: { x: true, y: false } },
            hooks: { setScale: [(u, scale) => { if (scale === "x" && !chart.loading) chart.zoomed(u); }] },
          };
          chart.plot = new uPlot(opts, data, body);
          chart.plot.over.addEventListener("dblclick", () => chart.load());
          box.dataset.points = String(shown);
        } else {
          chart.plot.setData(data, false);
          box.dataset.points = String(shown);
        }
      } catch (e) {
        info.textContent = `could not load ${key}: ${e.message}`;
      } finally {
        chart.loading = false;
      }
    };
    chart.zoomed = function (u) {
      clearTimeout(chart.timer);
      const { min, max } = u.scales.x;
      // uPlot sets the x scale when it first draws too: only a narrower range (the
      // user's zoom) asks the server for finer points.
      if (!chart.full || (min <= chart.full[0] && max >= chart.full[1])) return;
      chart.timer = setTimeout(() => chart.load([min, max]), 120);
    };
    return chart;
  }

  for (const key of keys) charts.push(makeChart(key));
  const reloadAll = () => charts.forEach((c) => c.load());
  reloadAll();

  const xAxis = document.getElementById("x-axis");
  if (xAxis) xAxis.addEventListener("change", () => { state.x = xAxis.value; reloadAll(); });
  const smoothing = document.getElementById("smoothing");
  const smoothingValue = document.getElementById("smoothing-value");
  if (smoothing) smoothing.addEventListener("change", () => {
    state.smoothing = Number(smoothing.value);
    smoothingValue.textContent = smoothing.value;
    reloadAll();
  });
  const logScale = document.getElementById("log-scale");
  if (logScale) logScale.addEventListener("change", () => { state.log = logScale.checked; reloadAll(); });
})();
