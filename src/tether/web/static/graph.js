// The lineage graph: laid out by dagre (vendored), drawn as SVG. Labels are set as
// text nodes, never parsed as markup; links come from the server (node.href).
(function () {
  "use strict";
  const box = document.getElementById("graph");
  if (!box || !window.dagre) return;
  const data = JSON.parse(box.dataset.graph);
  const NS = "http://www.w3.org/2000/svg";
  const g = new dagre.graphlib.Graph({ multigraph: true });
  g.setGraph({ rankdir: "LR", nodesep: 18, ranksep: 70, marginx: 12, marginy: 12 });
  g.setDefaultEdgeLabel(() => ({}));
  const short = (s) => (s.length > 42 ? s.slice(0, 40) + "…" : s);
  for (const n of data.nodes) {
    const label = short(n.label);
    g.setNode(n.id, { node: n, text: label, width: Math.max(90, label.length * 7 + 26), height: 34 });
  }
  data.edges.forEach((e, i) => {
    if (g.hasNode(e.from) && g.hasNode(e.to)) g.setEdge(e.from, e.to, { relation: e.relation, width: 60, height: 14, labelpos: "c" }, "e" + i);
  });
  dagre.layout(g);
  const el = (name, attrs, parent) => {
    const x = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) x.setAttribute(k, String(v));
    if (parent) parent.appendChild(x);
    return x;
  };
  const size = g.graph();
  const svg = el("svg", { width: size.width, height: size.height, viewBox: `0 0 ${size.width} ${size.height}`, role: "img" });
  const defs = el("defs", {}, svg);
  const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" }, defs);
  el("path", { d: "M0,0 L10,5 L0,10 z", fill: "#8a96a3" }, marker);
  for (const id of g.edges()) {
    const e = g.edge(id);
    const d = e.points.map((p, i) => (i ? "L" : "M") + p.x.toFixed(1) + "," + p.y.toFixed(1)).join(" ");
    el("path", { d, class: "edge", "marker-end": "url(#arrow)" }, svg);
    const t = el("text", { x: e.x, y: e.y, "text-anchor": "middle", class: "edge-label" }, svg);
    t.textContent = e.relation;
  }
  const roots = new Set(data.roots);
  for (const id of g.nodes()) {
    const v = g.node(id);
    const n = v.node;
    const group = el("g", { class: `node ${n.kind}${roots.has(n.id) ? " subject" : ""}`, "data-id": n.id, transform: `translate(${v.x - v.width / 2},${v.y - v.height / 2})` }, svg);
    const target = n.href ? el("a", { href: n.href }, group) : group;
    el("rect", { width: v.width, height: v.height, rx: 4 }, target);
    const kind = el("text", { x: 8, y: 12, fill: "#5b6673", "font-size": 9 }, target);
    kind.textContent = n.kind;
    const label = el("text", { x: 8, y: 27 }, target);
    label.textContent = v.text;
    const title = el("title", {}, target);
    title.textContent = n.label;
  }
  box.appendChild(svg);
  box.dataset.rendered = String(g.nodeCount());
})();
