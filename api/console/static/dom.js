// Building the page from data without ever parsing data as HTML.
//
// Everything the server sends (file names, error messages, search text) reaches the page
// as text nodes or attribute values set through the DOM, never through innerHTML, so a
// file called "<img onerror=…>.pdf" is shown as exactly that.

/** h("a", {href: "#/x", class: "link"}, "text", childNode, [more]) → an element. */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "class") {
      element.className = value;
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(element, children);
  return element;
}

/** Append children: nodes as they are, anything else as text; null and false skipped. */
export function append(element, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

/** Replace an element's children. */
export function fill(element, ...children) {
  element.replaceChildren();
  return append(element, children);
}

/** `text` with every whole-word occurrence of `words` wrapped in <mark>, as DOM nodes:
 * "line" marks "Line" but not the "line" inside "deadline". */
export function highlighted(text, words) {
  const terms = words.filter((w) => w.length > 1).map(escapeRegExp);
  if (terms.length === 0) return [text];
  const pattern = new RegExp(`(?<![\\p{L}\\p{N}])(${terms.join("|")})(?![\\p{L}\\p{N}])`, "giu");
  return text.split(pattern).map((part, i) => (i % 2 === 1 ? h("mark", {}, part) : part));
}

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

// Words too common to be worth a highlight: marking every "the" hides the words that matter.
const STOP_WORDS = new Set(
  `a about above after again all also am an and any are as at be because been before being
  below between both but by can could did do does doing down during each few for from further
  had has have having he her here hers him his how i if in into is it its itself just me more
  most my no nor not now of off on once only or other our ours out over own same she should so
  some such than that the their theirs them then there these they this those through to too
  under until up very was we were what when where which while who whom why will with would you
  your yours`.split(/\s+/),
);

/** The words of a search query, as a person would expect them highlighted: letters and
 * digits, lower-cased, each once, stop words left out. */
export function queryWords(query) {
  const words = query.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? [];
  return [...new Set(words)].filter((word) => !STOP_WORDS.has(word));
}

/** "1 page", "2 pages". */
export function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  const units = ["bytes", "KB", "MB", "GB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} bytes` : `${value.toFixed(1)} ${units[unit]}`;
}

/** A duration in words a person reads at a glance: "45 s", "3 min 5 s", "2 h 10 min". */
export function formatAge(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** Stage timings: milliseconds under a second, else seconds. */
export function formatSeconds(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  return seconds < 1 ? `${Math.round(seconds * 1000)} ms` : `${seconds.toFixed(2)} s`;
}

export function formatTime(iso) {
  if (!iso) return "–";
  return new Date(iso).toLocaleString();
}

/** Seconds between an ISO time and now. */
export function ageOf(iso) {
  return iso ? (Date.now() - new Date(iso).getTime()) / 1000 : null;
}

/** A status as a badge: its name in words (never colour alone). */
export function statusBadge(status, stage) {
  const label = status === "processing" && stage ? `processing (${stage})` : status;
  return h("span", { class: `badge badge-${status}` }, label);
}
