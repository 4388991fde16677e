// Search: the best matching chunks of a collection, each with its document, page numbers,
// the rankings that found it, and the query's words highlighted (whole words, no stop
// words). The query lives in the URL (#/search?collection=…&q=…&mode=…) so a search can be
// shared or revisited; credentials never do.

import { api, paths } from "./api.js";
import { collectionField, rememberCollection } from "./collections.js";
import { fill, h, highlighted, plural, queryWords } from "./dom.js";

const RESULTS = [5, 10, 20, 50];
// How the API ranks: keyword and vector rankings fused (the default), or one of them alone.
const MODES = [
  ["hybrid", "Hybrid: words and meaning"],
  ["vector", "Vector: meaning"],
  ["keyword", "Keyword: exact words"],
];

export function render(root, ctx) {
  const field = collectionField(ctx.signal, { id: "search-collection", value: ctx.params.get("collection") ?? "" });
  const query = h("input", { id: "query", name: "q", type: "search", required: true, value: ctx.params.get("q") ?? "" });
  const k = h("select", { id: "k", name: "k" }, RESULTS.map((n) => h("option", { value: n, selected: String(n) === (ctx.params.get("k") ?? "10") }, String(n))));
  const chosen = ctx.params.get("mode") ?? "hybrid";
  const mode = h("select", { id: "mode", name: "mode" }, MODES.map(([value, label]) => h("option", { value, selected: value === chosen }, label)));
  const results = h("section", { "aria-labelledby": "results-title", class: "results" });
  root.append(
    h(
      "form",
      { class: "card filters", role: "search", onsubmit: (event) => submit(event, field.input, query, k, mode, ctx) },
      field.element,
      h("div", { class: "field grow" }, h("label", { for: "query" }, "Search for"), query),
      h("div", { class: "field" }, h("label", { for: "mode" }, "Mode"), mode),
      h("div", { class: "field" }, h("label", { for: "k" }, "Results"), k),
      h("button", { type: "submit" }, "Search"),
    ),
    results,
  );
  const collection = ctx.params.get("collection");
  if (collection && query.value) run(results, collection, query.value, k.value, mode.value, ctx);
  else query.focus();
}

function submit(event, collection, query, k, mode, ctx) {
  event.preventDefault();
  if (!collection.reportValidity() || !query.reportValidity()) return;
  rememberCollection(collection.value.trim());
  const params = new URLSearchParams({ collection: collection.value.trim(), q: query.value, k: k.value, mode: mode.value });
  ctx.navigate(`#/search?${params}`);
}

async function run(section, collection, q, k, mode, ctx) {
  fill(section, h("h2", { id: "results-title" }, "Results"), h("p", {}, "Searching…"));
  let body;
  try {
    body = await api(paths.search(collection, q, k, mode), { signal: ctx.signal });
  } catch (error) {
    if (error.name === "AbortError") return;
    fill(section, h("h2", { id: "results-title" }, "Results"));
    ctx.alert(`The search failed: ${error.message}`);
    return;
  }
  const words = queryWords(q);
  const count = body.results.length;
  fill(
    section,
    h("h2", { id: "results-title" }, `${plural(count, "result")} for “${q}” in ${collection}`),
    count === 0 ? h("p", {}, "No completed document in this collection matches. Check the spelling, or wait for uploads to complete.") : h("ol", { class: "hits" }, body.results.map((hit) => result(hit, words))),
    h("p", { class: "muted" }, `Mode ${mode}; meaning compared by the embedding model ${body.model}.`),
  );
  ctx.notify(`${plural(count, "result")}.`);
}

function result(hit, words) {
  const pages = hit.pages.length === 1 ? `page ${hit.pages[0]}` : `pages ${hit.pages[0]}–${hit.pages[hit.pages.length - 1]}`;
  return h(
    "li",
    { class: "hit" },
    h("h3", {}, h("a", { href: `#/documents/${encodeURIComponent(hit.document_id)}` }, hit.filename)),
    h("p", { class: "hit-meta" }, h("span", { class: "hit-pages" }, pages), ` · chunk ${hit.chunk + 1} · score ${hit.score.toFixed(3)}`, foundBy(hit.rankings)),
    h("p", { class: "hit-text" }, highlighted(hit.text, words)),
  );
}

// Which rankings found the hit, and at what rank ({"keyword": 3, "vector": 1} → "keyword #3",
// "vector #1"); nothing when the API does not say.
function foundBy(rankings) {
  const found = Object.entries(rankings ?? {}).filter(([, rank]) => Number.isInteger(rank));
  if (found.length === 0) return null;
  found.sort(([a], [b]) => a.localeCompare(b));
  return h(
    "span",
    { class: "hit-rankings" },
    " · found by ",
    found.map(([name, rank]) => h("span", { class: "ranking", "data-ranking": name }, `${name} #${rank}`)),
  );
}
