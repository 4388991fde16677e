// Search: the best matching chunks of a collection, each with its document, page numbers
// and the query's words highlighted. The query lives in the URL (#/search?collection=…&q=…)
// so a search can be shared or revisited; credentials never do.

import { api, paths } from "./api.js";
import { collectionField, rememberCollection } from "./collections.js";
import { fill, h, highlighted, plural, queryWords } from "./dom.js";

const RESULTS = [5, 10, 20, 50];

export function render(root, ctx) {
  const field = collectionField(ctx.signal, { id: "search-collection", value: ctx.params.get("collection") ?? "" });
  const query = h("input", { id: "query", name: "q", type: "search", required: true, value: ctx.params.get("q") ?? "" });
  const k = h("select", { id: "k", name: "k" }, RESULTS.map((n) => h("option", { value: n, selected: String(n) === (ctx.params.get("k") ?? "10") }, String(n))));
  const results = h("section", { "aria-labelledby": "results-title", class: "results" });
  root.append(
    h(
      "form",
      { class: "card filters", role: "search", onsubmit: (event) => submit(event, field.input, query, k, ctx) },
      field.element,
      h("div", { class: "field grow" }, h("label", { for: "query" }, "Search for"), query),
      h("div", { class: "field" }, h("label", { for: "k" }, "Results"), k),
      h("button", { type: "submit" }, "Search"),
    ),
    results,
  );
  const collection = ctx.params.get("collection");
  if (collection && query.value) run(results, collection, query.value, k.value, ctx);
  else query.focus();
}

function submit(event, collection, query, k, ctx) {
  event.preventDefault();
  if (!collection.reportValidity() || !query.reportValidity()) return;
  rememberCollection(collection.value.trim());
  const params = new URLSearchParams({ collection: collection.value.trim(), q: query.value, k: k.value });
  ctx.navigate(`#/search?${params}`);
}

async function run(section, collection, q, k, ctx) {
  fill(section, h("h2", { id: "results-title" }, "Results"), h("p", {}, "Searching…"));
  let body;
  try {
    body = await api(paths.search(collection, q, k), { signal: ctx.signal });
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
    h("p", { class: "muted" }, `Ranked by the embedding model ${body.model}.`),
  );
  ctx.notify(`${plural(count, "result")}.`);
}

function result(hit, words) {
  const pages = hit.pages.length === 1 ? `page ${hit.pages[0]}` : `pages ${hit.pages[0]}–${hit.pages[hit.pages.length - 1]}`;
  return h(
    "li",
    { class: "hit" },
    h("h3", {}, h("a", { href: `#/documents/${encodeURIComponent(hit.document_id)}` }, hit.filename)),
    h("p", { class: "hit-meta" }, h("span", { class: "hit-pages" }, pages), ` · chunk ${hit.chunk + 1} · score ${hit.score.toFixed(3)}`),
    h("p", { class: "hit-text" }, highlighted(hit.text, words)),
  );
}
