// Documents: the collections in use, one collection's documents filtered by status (retry
// or delete the selected ones), and one document's detail (facts, attempts with per-stage
// timings, its chunks with their pages, the original file) with retry and delete.

import { api, download, paths } from "./api.js";
import { collectionField, loadCollections, rememberCollection } from "./collections.js";
import { append, fill, formatBytes, formatSeconds, formatTime, h, plural, statusBadge } from "./dom.js";
import { failureBlock } from "./plain.js";

const STATUSES = ["queued", "processing", "completed", "failed"];
const STAGE_ORDER = ["download", "extract", "chunk", "embed", "index", "total"];
const LIVE = new Set(["queued", "processing"]);
const POLL_MS = 1000;
const CHUNKS_PER_PAGE = 20;

// -- the list --------------------------------------------------------------------------

export function renderList(root, ctx) {
  const field = collectionField(ctx.signal, { id: "list-collection", value: ctx.params.get("collection") ?? "" });
  const status = statusSelect(ctx.params.get("status") ?? "");
  const results = h("section", { "aria-labelledby": "results-title" });
  const form = h(
    "form",
    { class: "card filters", onsubmit: (event) => show(event, field.input, status, ctx) },
    field.element,
    h("div", { class: "field" }, h("label", { for: "list-status" }, "Status"), status),
    h("button", { type: "submit" }, "Show documents"),
  );
  const overview = h("section", { "aria-labelledby": "collections-title" }, h("h2", { id: "collections-title" }, "Collections"), h("p", {}, "Loading…"));
  root.append(form, results, overview);
  collectionsOverview(overview, ctx);
  field.ready.then(() => {
    if (field.input.value && !ctx.signal.aborted) listDocuments(results, field.input.value, status.value, ctx);
  });
}

function statusSelect(current) {
  const options = [["", "Any status"], ...STATUSES.map((s) => [s, s])];
  return h("select", { id: "list-status", name: "status" }, options.map(([value, label]) => h("option", { value, selected: value === current }, label)));
}

function show(event, input, status, ctx) {
  event.preventDefault();
  if (!input.reportValidity()) return;
  rememberCollection(input.value.trim());
  const query = new URLSearchParams({ collection: input.value.trim() });
  if (status.value) query.set("status", status.value);
  ctx.navigate(`#/documents?${query}`);
}

async function collectionsOverview(section, ctx) {
  const collections = await loadCollections(ctx.signal).catch(() => []);
  const rows = collections.map((c) =>
    h(
      "tr",
      {},
      h("th", { scope: "row" }, h("a", { href: `#/documents?collection=${encodeURIComponent(c.name)}` }, c.name)),
      STATUSES.map((s) => h("td", { class: "number" }, String(c.counts[s] ?? 0))),
      h("td", { class: "number" }, String(c.documents)),
    ),
  );
  fill(
    section,
    h("h2", { id: "collections-title" }, "Collections"),
    rows.length === 0
      ? h("p", {}, "No collections yet (or your key may not list them). Upload files to start one.")
      : h("table", { class: "data" }, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Collection"), STATUSES.map((s) => h("th", { scope: "col", class: "number" }, s)), h("th", { scope: "col", class: "number" }, "total"))), h("tbody", {}, rows)),
  );
}

async function listDocuments(section, collection, status, ctx, cursor = null, tbody = null) {
  let page;
  try {
    page = await api(paths.documents(collection, { status, cursor }), { signal: ctx.signal });
  } catch (error) {
    if (error.name !== "AbortError") ctx.alert(`Could not list the documents: ${error.message}`);
    return;
  }
  if (!tbody) {
    tbody = h("tbody");
    const what = status ? `${status} documents` : "Documents";
    const all = h("input", { type: "checkbox", id: "select-all", "aria-label": "Select every document shown", onchange: () => selectAll(tbody, all.checked) });
    const head = h("tr", {}, h("th", { scope: "col" }, all), ["File", "Status", "Error", "Pages", "Chunks", "Attempts", "Size", "Uploaded"].map((t) => h("th", { scope: "col" }, t)));
    fill(
      section,
      h("h2", { id: "results-title" }, `${what} in ${collection}`),
      page.documents.length === 0
        ? h("p", {}, "None.")
        : [bulkActions(tbody, ctx, () => listDocuments(section, collection, status, ctx)), h("div", { class: "scroll", role: "region", "aria-label": "Documents table", tabindex: 0 }, h("table", { class: "data", id: "documents-table" }, h("thead", {}, head), tbody))],
    );
  }
  tbody.append(...page.documents.map(documentRow));
  section.querySelector(".more")?.remove();
  if (page.next_cursor) {
    const more = h("button", { type: "button", class: "secondary more" }, "Show more");
    more.addEventListener("click", () => listDocuments(section, collection, status, ctx, page.next_cursor, tbody));
    section.append(more);
  }
  ctx.notify(`${plural(tbody.children.length, "document")} shown.`);
}

function documentRow(doc) {
  const select = h("input", { type: "checkbox", class: "doc-select", value: doc.id, "aria-label": `Select ${doc.filename}` });
  select.doc = doc;
  return h(
    "tr",
    { "data-document": doc.id },
    h("td", {}, select),
    h("th", { scope: "row" }, h("a", { href: `#/documents/${encodeURIComponent(doc.id)}` }, doc.filename)),
    h("td", {}, statusBadge(doc.status, doc.current_stage)),
    h("td", {}, doc.error_code ? h("code", {}, doc.error_code) : "–"),
    h("td", { class: "number" }, doc.page_count ?? "–"),
    h("td", { class: "number" }, String(doc.chunk_count)),
    h("td", { class: "number" }, `${doc.attempts} of ${doc.max_attempts}`),
    h("td", { class: "number" }, formatBytes(doc.size_bytes)),
    h("td", {}, formatTime(doc.created_at)),
  );
}

function selectAll(tbody, checked) {
  for (const box of tbody.querySelectorAll(".doc-select")) box.checked = checked;
}

function bulkActions(tbody, ctx, reload) {
  const chosen = () => [...tbody.querySelectorAll(".doc-select:checked")].map((box) => box.doc);
  const run = async (verb) => {
    ctx.alert(null);
    const docs = chosen();
    if (docs.length === 0) {
      ctx.alert("Select at least one document first.");
      return;
    }
    if (verb === "delete") {
      const sure = await ctx.confirm(`${plural(docs.length, "document")} leave search results at once, and their files and chunks are removed soon after. This cannot be undone.`, { title: "Delete the selected documents?", action: "Delete" });
      if (!sure) return;
    }
    const summary = await bulk(verb, docs, ctx);
    await reload(); // the list afresh: statuses changed, and so did the counts
    const overview = document.querySelector("section[aria-labelledby=collections-title]");
    if (overview) await collectionsOverview(overview, ctx);
    ctx.notify(summary);
  };
  return h(
    "div",
    { class: "actions", id: "bulk-actions" },
    h("button", { type: "button", onclick: () => run("retry") }, "Retry selected"),
    h("button", { type: "button", class: "danger", onclick: () => run("delete") }, "Delete selected…"),
  );
}

/** Retry or delete each document; retry only those where it can succeed. A summary. */
async function bulk(verb, docs, ctx) {
  const done = [];
  const skipped = [];
  const failed = [];
  let unfailed = 0;
  for (const doc of docs) {
    if (verb === "retry" && doc.status !== "failed") {
      unfailed += 1;
      continue;
    }
    if (verb === "retry" && !doc.links.retry) {
      skipped.push(doc.filename);
      continue;
    }
    const [path, method] = verb === "retry" ? [paths.retry(doc.id), "POST"] : [paths.document(doc.id), "DELETE"];
    try {
      await api(path, { method, signal: ctx.signal });
      done.push(doc.filename);
    } catch (error) {
      if (error.name === "AbortError") throw error;
      failed.push(`${doc.filename} (${error.message})`);
    }
  }
  const what = verb === "retry" ? "queued again" : "deleted";
  const parts = [`${plural(done.length, "document")} ${what}`];
  if (unfailed) parts.push(`${plural(unfailed, "document")} not failed, left as ${unfailed === 1 ? "it is" : "they are"}`);
  if (skipped.length) parts.push(`not retried, since retrying cannot help: ${skipped.join(", ")}`);
  if (failed.length) parts.push(`refused: ${failed.join(", ")}`);
  return `${parts.join("; ")}.`;
}

// -- one document ----------------------------------------------------------------------

export function renderDetail(root, ctx) {
  const id = decodeURIComponent(ctx.match[1]);
  let timer = null;
  let shown = null;
  const load = async () => {
    timer = null;
    let doc;
    try {
      doc = await api(paths.document(id), { signal: ctx.signal });
    } catch (error) {
      if (error.name !== "AbortError") ctx.alert(`Could not load the document: ${error.message}`);
      return;
    }
    const signature = `${doc.status}|${doc.updated_at}|${doc.current_stage}`;
    if (signature !== shown) {
      shown = signature;
      ctx.setTitle(doc.filename);
      fill(root, ...detail(doc, ctx, load));
    }
    if (LIVE.has(doc.status)) timer = setTimeout(load, POLL_MS);
  };
  load();
  return () => clearTimeout(timer);
}

function detail(doc, ctx, reload) {
  return [
    h("p", {}, h("a", { href: `#/documents?collection=${encodeURIComponent(doc.collection)}` }, `All documents in ${doc.collection}`)),
    doc.status === "failed" ? failureBlock(doc) : null,
    doc.status === "failed" && !doc.links.retry ? h("p", { class: "hint", id: "no-retry" }, "Retrying would fail the same way: the file itself is the problem.") : null,
    actions(doc, ctx, reload),
    facts(doc),
    attempts(doc),
    doc.status === "completed" && doc.chunk_count > 0 ? chunkList(doc, ctx) : null,
  ];
}

function actions(doc, ctx, reload) {
  const buttons = [];
  if (doc.links.retry) {
    buttons.push(h("button", { type: "button", onclick: () => act(ctx, reload, paths.retry(doc.id), "POST", `${doc.filename} is queued again.`) }, "Retry"));
  }
  if (doc.status !== "deleted") {
    buttons.push(h("button", { type: "button", class: "secondary", onclick: () => save(doc, ctx) }, "Download the original"));
    buttons.push(h("button", { type: "button", class: "danger", onclick: () => remove(doc, ctx, reload) }, "Delete"));
  }
  return buttons.length ? h("div", { class: "actions" }, buttons) : null;
}

async function save(doc, ctx) {
  try {
    await download(paths.content(doc.id), doc.filename, ctx.signal);
    ctx.notify(`${doc.filename} is downloading.`);
  } catch (error) {
    if (error.name !== "AbortError") ctx.alert(`Could not download ${doc.filename}: ${error.message}`);
  }
}

async function remove(doc, ctx, reload) {
  const sure = await ctx.confirm(`${doc.filename} leaves search results at once, and its file and chunks are removed soon after. This cannot be undone.`, { title: "Delete this document?", action: "Delete" });
  if (sure) await act(ctx, reload, paths.document(doc.id), "DELETE", `${doc.filename} is deleted.`);
}

async function act(ctx, reload, path, method, done) {
  try {
    await api(path, { method, signal: ctx.signal });
    ctx.notify(done);
  } catch (error) {
    if (error.name !== "AbortError") ctx.alert(error.message);
  }
  await reload();
  document.getElementById("title").focus();
}

function facts(doc) {
  const rows = [
    ["Status", statusBadge(doc.status, doc.current_stage)],
    ["Collection", doc.collection],
    ["Pages", doc.page_count ?? "not read yet"],
    ["Chunks", String(doc.chunk_count)],
    ["Attempts", `${doc.attempts} of ${doc.max_attempts}`],
    ["Type", doc.content_type],
    ["Size", formatBytes(doc.size_bytes)],
    ["Uploaded", formatTime(doc.created_at)],
    ["Started", formatTime(doc.started_at)],
    ["Completed", formatTime(doc.completed_at)],
    doc.deleted_at ? ["Deleted", formatTime(doc.deleted_at)] : null,
    doc.not_before ? ["Next try not before", formatTime(doc.not_before)] : null,
    doc.lease ? ["Held by", `${doc.lease.owner} until ${formatTime(doc.lease.expires_at)}`] : null,
    ["Document id", h("code", {}, doc.id)],
    ["SHA-256", h("code", { class: "wrap" }, doc.sha256)],
  ].filter(Boolean);
  return h(
    "section",
    { "aria-labelledby": "facts-title" },
    h("h2", { id: "facts-title" }, "Facts"),
    h("dl", { class: "facts" }, rows.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)])),
  );
}

function attempts(doc) {
  const history = doc.history ?? [];
  const section = h("section", { "aria-labelledby": "attempts-title" }, h("h2", { id: "attempts-title" }, "Attempts and timings per stage"));
  if (history.length === 0) return append(section, h("p", {}, "No attempt yet."));
  const stages = stageColumns(history);
  const head = ["Attempt", "Outcome", "Worker", "Started", ...stages.map((s) => `${s} time`), "Error"];
  const rows = history.map((a) =>
    h(
      "tr",
      {},
      h("th", { scope: "row" }, `#${a.number}`),
      h("td", {}, a.outcome),
      h("td", {}, a.worker),
      h("td", {}, formatTime(a.started_at)),
      stages.map((s) => h("td", { class: "number" }, formatSeconds(a.stage_seconds?.[s]))),
      h("td", {}, attemptError(a, doc)),
    ),
  );
  return append(section, h("div", { class: "scroll", role: "region", "aria-label": "Attempts table (scrolls sideways)", tabindex: 0 }, h("table", { class: "data" }, h("thead", {}, h("tr", {}, head.map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows))));
}

/** The error of an attempt; the one already shown above the facts is not repeated. */
function attemptError(attempt, doc) {
  if (!attempt.error) return attempt.error_code ?? "–";
  const shownAbove = doc.status === "failed" && attempt.error === doc.last_error && attempt.error_code === doc.error_code;
  if (shownAbove) return [h("code", {}, attempt.error_code ?? "error"), " (described above)"];
  return `${attempt.error}${attempt.error_code ? ` (${attempt.error_code})` : ""}`;
}

// -- the chunks: the document's text as indexed, with its pages ------------------------

function chunkList(doc, ctx) {
  const list = h("ol", { class: "chunks", id: "chunks" });
  const section = h(
    "section",
    { "aria-labelledby": "chunks-title" },
    h("h2", { id: "chunks-title" }, "Text and chunks"),
    h("p", { class: "hint" }, `The text Sheaf extracted, as it is indexed for search: ${plural(doc.chunk_count, "chunk")}, each with its pages. Neighbouring chunks share a few words of overlap.`),
    list,
  );
  moreChunks(doc, list, section, ctx, 0);
  return section;
}

async function moreChunks(doc, list, section, ctx, offset) {
  let page;
  try {
    page = await api(paths.chunks(doc.id, { offset, limit: CHUNKS_PER_PAGE }), { signal: ctx.signal });
  } catch (error) {
    if (error.name !== "AbortError") append(section, h("p", {}, `Could not load the chunks: ${error.message}`));
    return;
  }
  list.append(
    ...page.chunks.map((c) =>
      h(
        "li",
        { class: "hit chunk" },
        h("h3", {}, `Chunk ${c.ordinal + 1}`, h("span", { class: "hit-pages" }, ` · ${pages(c)}`)),
        h("p", { class: "hit-text" }, c.text),
      ),
    ),
  );
  section.querySelector(".more")?.remove();
  const next = offset + page.chunks.length;
  if (next < page.total) {
    const more = h("button", { type: "button", class: "secondary more" }, `Show more chunks (${next} of ${page.total} shown)`);
    more.addEventListener("click", () => moreChunks(doc, list, section, ctx, next));
    section.append(more);
  }
}

function pages(chunk) {
  return chunk.page_start === chunk.page_end ? `page ${chunk.page_start}` : `pages ${chunk.page_start}–${chunk.page_end}`;
}

function stageColumns(history) {
  const seen = new Set(history.flatMap((a) => Object.keys(a.stage_seconds ?? {})));
  const known = STAGE_ORDER.filter((s) => seen.has(s));
  return [...known, ...[...seen].filter((s) => !STAGE_ORDER.includes(s)).sort()];
}
