// Small charts in plain SVG: stacked bars over time and lines over time.
//
// No chart library: these two shapes are all the dashboard draws, and a few dozen lines
// of SVG keep the console free of third-party code and of any build step. Colours come
// from console.css classes (the Content-Security-Policy forbids inline styles); every
// chart is an image with a text summary for screen readers, has a legend in words, and
// its numbers are also in a table next to it.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 640;
const HEIGHT = 180;
const PAD = { left: 44, right: 12, top: 10, bottom: 24 };

function s(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  for (const child of children) element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return element;
}

/** A round number at or above `value`, so the top of the axis reads well. */
export function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  const step = [1, 2, 2.5, 5, 10].find((m) => m * power >= value);
  return step * power;
}

function frame(label, top, formatY, xLabels) {
  const innerBottom = HEIGHT - PAD.bottom;
  return s(
    "svg",
    { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": label, class: "chart", preserveAspectRatio: "none" },
    s("line", { x1: PAD.left, y1: innerBottom, x2: WIDTH - PAD.right, y2: innerBottom, class: "axis" }),
    s("line", { x1: PAD.left, y1: PAD.top, x2: WIDTH - PAD.right, y2: PAD.top, class: "grid" }),
    s("text", { x: PAD.left - 6, y: PAD.top + 4, class: "tick", "text-anchor": "end" }, formatY(top)),
    s("text", { x: PAD.left - 6, y: innerBottom + 4, class: "tick", "text-anchor": "end" }, formatY(0)),
    s("text", { x: PAD.left, y: HEIGHT - 6, class: "tick" }, xLabels[0]),
    s("text", { x: WIDTH - PAD.right, y: HEIGHT - 6, class: "tick", "text-anchor": "end" }, xLabels[1]),
  );
}

/**
 * Stacked bars, one per bucket: `rows` are objects, `keys` the fields stacked bottom up,
 * each drawn with the CSS class `bar-<key>`.
 */
export function stackedBars(rows, keys, { label, xLabels, formatY = String }) {
  const totals = rows.map((row) => keys.reduce((sum, key) => sum + row[key], 0));
  const top = niceMax(Math.max(0, ...totals));
  const svg = frame(label, top, formatY, xLabels);
  const plotWidth = WIDTH - PAD.left - PAD.right;
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const slot = plotWidth / Math.max(rows.length, 1);
  rows.forEach((row, i) => {
    let base = HEIGHT - PAD.bottom;
    for (const key of keys) {
      const height = (row[key] / top) * plotHeight;
      if (height <= 0) continue;
      base -= height;
      svg.append(s("rect", { x: PAD.left + i * slot + 1, y: base, width: Math.max(slot - 2, 1), height, class: `bar bar-${key}` }));
    }
  });
  return svg;
}

/**
 * Lines over time: `series` is [{key, points: [[time ms, value]]}], drawn with the CSS
 * class `line-<key>`; `domain` is [start ms, end ms].
 */
export function lines(series, domain, { label, xLabels, formatY = String }) {
  const values = series.flatMap((line) => line.points.map(([, v]) => v ?? 0));
  const top = niceMax(Math.max(0, ...values));
  const svg = frame(label, top, formatY, xLabels);
  const [start, end] = domain;
  const x = (t) => PAD.left + ((t - start) / Math.max(end - start, 1)) * (WIDTH - PAD.left - PAD.right);
  const y = (v) => HEIGHT - PAD.bottom - ((v ?? 0) / top) * (HEIGHT - PAD.top - PAD.bottom);
  for (const line of series) {
    if (line.points.length === 0) continue;
    const d = line.points.map(([t, v], i) => `${i ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    svg.append(s("path", { d, class: `line line-${line.key}` }));
    const [lastT, lastV] = line.points.at(-1);
    svg.append(s("circle", { cx: x(lastT), cy: y(lastV), r: 3, class: `dot line-${line.key}` }));
  }
  return svg;
}

/** A horizontal bar proportional to `value / max`, for a table cell (decorative). */
export function meter(value, max, key) {
  const width = max > 0 ? Math.max((value / max) * 200, value > 0 ? 2 : 0) : 0;
  return s("svg", { viewBox: "0 0 200 12", width: 200, height: 12, class: "meter", "aria-hidden": "true", focusable: "false" }, s("rect", { x: 0, y: 0, width, height: 12, class: `bar bar-${key}` }));
}
