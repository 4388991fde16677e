// Upload: drop files or a folder onto a collection and watch each one go
// queued → processing → completed or failed, with the reason in plain words and a retry.
//
// The list of this tab's uploads outlives the screen (it is module state), so a person
// can look elsewhere and come back. While anything is unfinished, one poll a second
// refreshes it: one list request per collection (newest 200), plus single-document
// requests for the few older ones that list did not cover.

import { api, paths, uploadFile } from "./api.js";
import { collectionField, rememberCollection } from "./collections.js";
import { fill, h, plural, statusBadge } from "./dom.js";
import { failureBlock } from "./plain.js";

const TERMINAL = new Set(["completed", "failed", "deleted"]);
const PARALLEL_UPLOADS = 3;
const POLL_MS = 1000;
const SINGLE_FETCHES_PER_POLL = 10;

const uploads = []; // {key, name, collection, file, phase, doc, duplicate, error, row, shown}
let nextKey = 1;
let view = null; // {tbody, summary, ctx} while the screen is shown
let activeUploads = 0;
let pollTimer = null;

export function render(root, ctx) {
  const field = collectionField(ctx.signal, { id: "upload-collection" });
  const pick = (files) => add(files, field.input, ctx);
  root.append(
    h("form", { class: "card", onsubmit: (event) => event.preventDefault() }, field.element, dropZone(pick)),
    uploadsSection(ctx),
  );
  view.ctx = ctx;
  for (const item of uploads) showRow(item);
  updateSummary();
  ensurePolling();
  return () => {
    view = null;
  };
}

function dropZone(pick) {
  const files = h("input", { type: "file", id: "files", multiple: true });
  const folder = h("input", { type: "file", id: "folder", multiple: true, webkitdirectory: true });
  for (const input of [files, folder]) {
    input.addEventListener("change", () => {
      pick([...input.files].filter(visible));
      input.value = "";
    });
  }
  const zone = h(
    "section",
    { class: "dropzone", "aria-labelledby": "drop-title" },
    h("h2", { id: "drop-title" }, "Add files"),
    h("p", {}, "Drop files or a whole folder here, or choose them below. Sheaf reads PDF (scans too), Word, PowerPoint and Excel files (.docx, .pptx, .xlsx), web pages (.html), images (PNG, JPEG, TIFF), text and Markdown."),
    h("div", { class: "field" }, h("label", { for: "files" }, "Files"), files),
    h("div", { class: "field" }, h("label", { for: "folder" }, "A folder (every file in it)"), folder),
  );
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", async (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    pick(await droppedFiles(event.dataTransfer));
  });
  return zone;
}

function uploadsSection(ctx) {
  const tbody = h("tbody");
  const summary = h("p", { id: "upload-summary" });
  view = { tbody, summary, ctx };
  return h(
    "section",
    { "aria-labelledby": "uploads-title" },
    h("h2", { id: "uploads-title" }, "Uploads in this tab"),
    summary,
    h(
      "table",
      { class: "data", "aria-describedby": "upload-summary" },
      h("thead", {}, h("tr", {}, ["File", "Collection", "Status", "Details", "Action"].map((t) => h("th", { scope: "col" }, t)))),
      tbody,
    ),
    h("button", { type: "button", class: "secondary", onclick: clearFinished }, "Clear finished uploads"),
  );
}

// -- adding and uploading -------------------------------------------------------------

function add(files, input, ctx) {
  if (files.length === 0) return;
  if (!input.reportValidity()) {
    ctx.alert("Choose a collection first: type a name (letters, digits, '.', '_' or '-').");
    input.focus();
    return;
  }
  ctx.alert(null);
  const collection = input.value.trim();
  rememberCollection(collection);
  for (const file of files) {
    const item = { key: nextKey++, name: file.name, collection, file, phase: "waiting" };
    uploads.push(item);
    showRow(item);
  }
  ctx.notify(`${plural(files.length, "file")} added to the upload queue.`);
  updateSummary();
  pump();
}

function pump() {
  while (activeUploads < PARALLEL_UPLOADS) {
    const item = uploads.find((u) => u.phase === "waiting");
    if (!item) return;
    activeUploads += 1;
    item.phase = "uploading";
    showRow(item);
    send(item).finally(() => {
      activeUploads -= 1;
      pump();
    });
  }
}

async function send(item) {
  try {
    const body = await uploadFile(item.collection, item.file);
    item.doc = body;
    item.duplicate = body.duplicate;
    item.phase = "sent";
    ensurePolling();
  } catch (error) {
    item.phase = "rejected";
    item.error = error.message;
  }
  item.file = null; // the browser may free it
  showRow(item);
  updateSummary();
}

async function retry(item) {
  try {
    item.doc = await api(paths.retry(item.doc.id), { method: "POST" });
    view?.ctx.notify(`${item.name} is queued again.`);
    ensurePolling();
  } catch (error) {
    view?.ctx.alert(`Could not retry ${item.name}: ${error.message}`);
  }
  showRow(item);
  updateSummary();
  item.row?.querySelector("th").focus();
}

function clearFinished() {
  for (let i = uploads.length - 1; i >= 0; i -= 1) {
    const item = uploads[i];
    if (item.phase === "rejected" || (item.doc && TERMINAL.has(item.doc.status))) {
      item.row?.remove();
      uploads.splice(i, 1);
    }
  }
  updateSummary();
  view?.ctx.notify("Finished uploads cleared from the list.");
}

// -- live status ----------------------------------------------------------------------

function pending() {
  return uploads.filter((u) => u.doc && !TERMINAL.has(u.doc.status));
}

function ensurePolling() {
  if (pollTimer === null && pending().length > 0) pollTimer = setTimeout(poll, POLL_MS);
}

async function poll() {
  try {
    await refresh(pending());
  } catch (error) {
    view?.ctx.alert(`Live status paused: ${error.message}`);
    pollTimer = null;
    return; // resumes when the screen is shown again or something is uploaded
  }
  pollTimer = null;
  ensurePolling();
}

async function refresh(items) {
  const fresh = new Map();
  for (const collection of new Set(items.map((u) => u.doc.collection))) {
    const page = await api(paths.documents(collection, { limit: 200 }));
    for (const doc of page.documents) fresh.set(doc.id, doc);
  }
  const older = items.filter((u) => !fresh.has(u.doc.id)).slice(0, SINGLE_FETCHES_PER_POLL);
  for (const item of older) fresh.set(item.doc.id, await api(paths.document(item.doc.id)));
  const before = items.filter((u) => !TERMINAL.has(u.doc.status)).length;
  for (const item of items) {
    if (fresh.has(item.doc.id)) item.doc = fresh.get(item.doc.id);
    showRow(item);
  }
  updateSummary();
  if (before > 0 && pending().length === 0) view?.ctx.notify(`All uploads are processed. ${counts()}`);
}

// -- showing --------------------------------------------------------------------------

function showRow(item) {
  if (!view) return;
  if (!item.row || item.row.parentNode !== view.tbody) {
    item.row = h("tr", { "data-upload": item.key });
    item.shown = null;
    view.tbody.append(item.row);
  }
  const signature = JSON.stringify([item.phase, item.doc?.status, item.doc?.current_stage, item.doc?.attempts, item.error]);
  if (signature === item.shown) return;
  item.shown = signature;
  fill(item.row, ...cells(item));
}

function cells(item) {
  const doc = item.doc;
  const name = h("th", { scope: "row", tabindex: -1 }, item.name);
  const status = doc ? statusBadge(doc.status, doc.current_stage) : h("span", { class: `badge badge-${item.phase}` }, item.phase);
  return [name, h("td", {}, item.collection), h("td", {}, status), h("td", {}, details(item)), h("td", {}, action(item))];
}

function details(item) {
  const doc = item.doc;
  if (item.phase === "rejected") return h("span", { class: "failure-headline" }, `Not accepted: ${item.error}`);
  if (!doc) return item.phase === "waiting" ? "Waiting for its turn" : "Sending the file…";
  const parts = [];
  if (item.duplicate) parts.push(h("p", {}, "This file was already in the collection; showing that document."));
  if (doc.status === "failed") parts.push(failureBlock(doc));
  if (doc.status === "completed") parts.push(`${plural(doc.page_count ?? 0, "page")}, ${plural(doc.chunk_count, "chunk")}`);
  if (doc.status === "queued") parts.push(doc.attempts > 0 ? `Waiting to try again (attempt ${doc.attempts + 1} of ${doc.max_attempts})` : "Waiting for a worker");
  if (doc.status === "processing") parts.push(`Attempt ${doc.attempts} of ${doc.max_attempts}`);
  return parts;
}

function action(item) {
  const doc = item.doc;
  if (!doc) return null;
  const link = h("a", { href: `#/documents/${encodeURIComponent(doc.id)}` }, "Details", h("span", { class: "visually-hidden" }, ` of ${item.name}`));
  if (doc.status !== "failed" || !doc.links.retry) return link; // retrying cannot help
  const button = h("button", { type: "button", onclick: () => retry(item) }, "Retry", h("span", { class: "visually-hidden" }, ` ${item.name}`));
  return [button, " ", link];
}

function counts() {
  const tally = {};
  for (const item of uploads) {
    const state = item.doc?.status ?? item.phase;
    tally[state] = (tally[state] ?? 0) + 1;
  }
  return Object.entries(tally).map(([state, n]) => `${n} ${state}`).join(", ");
}

function updateSummary() {
  if (!view) return;
  fill(view.summary, uploads.length === 0 ? "Nothing uploaded in this tab yet." : `${plural(uploads.length, "file")}: ${counts()}.`);
}

// -- files from a drop ----------------------------------------------------------------

function visible(file) {
  const path = file.webkitRelativePath || file.name;
  return !path.split("/").some((part) => part.startsWith("."));
}

/** Files of a drop, walking into dropped folders (entries must be taken synchronously). */
async function droppedFiles(transfer) {
  const entries = [...transfer.items].map((item) => item.webkitGetAsEntry?.()).filter(Boolean);
  if (entries.length === 0) return [...transfer.files];
  const files = [];
  for (const entry of entries) await walk(entry, files);
  return files;
}

async function walk(entry, files) {
  if (entry.name.startsWith(".")) return;
  if (entry.isFile) {
    files.push(await new Promise((resolve, reject) => entry.file(resolve, reject)));
    return;
  }
  const reader = entry.createReader();
  for (;;) {
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (batch.length === 0) return;
    for (const child of batch) await walk(child, files);
  }
}
