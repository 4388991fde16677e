// Admin: documents per status and the age of the oldest waiting one (refreshed live), the
// failed documents that need a human, and the Service Bus dead-letter queue: re-drive
// chosen messages or all with one reason, purge with confirmation.

import { api, paths } from "./api.js";
import { ageOf, fill, formatAge, h, plural, statusBadge } from "./dom.js";
import { explain } from "./plain.js";

const STATS_MS = 2000;
const STATUS_ORDER = ["queued", "processing", "completed", "failed", "deleted"];

export function render(root, ctx) {
  const stats = h("section", { "aria-labelledby": "stats-title" }, h("h2", { id: "stats-title" }, "Documents by status"));
  const failed = h("section", { "aria-labelledby": "failed-title" }, h("h2", { id: "failed-title" }, "Failed documents"));
  const dlq = h("section", { "aria-labelledby": "dlq-title" }, h("h2", { id: "dlq-title" }, "Dead-letter queue"));
  root.append(stats, failed, dlq);
  let timer = null;
  const tick = async () => {
    await showStats(stats, ctx);
    if (!ctx.signal.aborted) timer = setTimeout(tick, STATS_MS);
  };
  tick();
  showFailed(failed, ctx);
  // A re-drive or purge changes which documents are failed: show both lists afresh.
  showDeadLetters(dlq, ctx, () => showFailed(failed, ctx));
  return () => clearTimeout(timer);
}

function problem(error, what) {
  if (error.status === 403) return `Your key may not see ${what}: it needs the admin scope over every collection.`;
  return `Could not load ${what}: ${error.message}`;
}

// -- counts ----------------------------------------------------------------------------

async function showStats(section, ctx) {
  let body;
  try {
    body = await api(paths.stats(), { signal: ctx.signal });
  } catch (error) {
    if (error.name !== "AbortError") fill(section, section.firstChild, h("p", {}, problem(error, "the counts")));
    return;
  }
  const statuses = [...STATUS_ORDER, ...Object.keys(body.counts).filter((s) => !STATUS_ORDER.includes(s))];
  const oldest = body.oldest_ready_age_seconds;
  fill(
    section,
    section.firstChild,
    h(
      "table",
      { class: "data compact", id: "status-counts" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Status"), h("th", { scope: "col", class: "number" }, "Documents"))),
      h("tbody", {}, statuses.map((s) => h("tr", {}, h("th", { scope: "row" }, statusBadge(s)), h("td", { class: "number" }, String(body.counts[s] ?? 0))))),
    ),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Oldest queued document waiting"),
      h("dd", { id: "oldest-queued" }, oldest === null ? "none waiting" : formatAge(oldest)),
      h("dt", {}, "Documents being processed now"),
      h("dd", {}, String(body.leases_held)),
    ),
  );
}

// -- failed documents --------------------------------------------------------------------

async function showFailed(section, ctx) {
  let page;
  try {
    page = await api(paths.failed({ limit: 50 }), { signal: ctx.signal });
  } catch (error) {
    if (error.name !== "AbortError") fill(section, section.firstChild, h("p", {}, problem(error, "the failed documents")));
    return;
  }
  const rows = page.documents.map((doc) =>
    h(
      "tr",
      {},
      h("th", { scope: "row" }, h("a", { href: `#/documents/${encodeURIComponent(doc.id)}` }, doc.filename)),
      h("td", {}, doc.collection),
      h("td", {}, explain(doc).headline),
      h("td", {}, doc.links.retry ? h("button", { type: "button", onclick: () => retry(doc, section, ctx) }, "Retry", h("span", { class: "visually-hidden" }, ` ${doc.filename}`)) : "Upload a fixed file"),
    ),
  );
  fill(
    section,
    section.firstChild,
    rows.length === 0
      ? h("p", {}, "No document has failed. Nothing needs a human.")
      : h("table", { class: "data" }, h("thead", {}, h("tr", {}, ["File", "Collection", "Why", "Action"].map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows)),
    page.next_cursor ? h("p", { class: "muted" }, "Showing the newest 50; `sheaf failed list` shows them all.") : null,
  );
}

async function retry(doc, section, ctx) {
  try {
    await api(paths.retry(doc.id), { method: "POST", signal: ctx.signal });
    ctx.notify(`${doc.filename} is queued again.`);
  } catch (error) {
    if (error.name !== "AbortError") ctx.alert(`Could not retry ${doc.filename}: ${error.message}`);
  }
  await showFailed(section, ctx);
  section.querySelector("h2").setAttribute("tabindex", "-1");
  section.querySelector("h2").focus();
}

// -- the dead-letter queue ---------------------------------------------------------------

async function showDeadLetters(section, ctx, changed, outcome = null) {
  const heading = section.firstChild;
  let page;
  try {
    page = await api(paths.dlq({ limit: 200 }), { signal: ctx.signal });
  } catch (error) {
    if (error.name === "AbortError") return;
    const text = error.code === "no_dead_letter_queue" ? `Not in use here: ${error.message}.` : problem(error, "the dead-letter queue");
    fill(section, heading, h("p", {}, text));
    return;
  }
  const messages = page.messages;
  const reload = (result) => showDeadLetters(section, ctx, changed, result);
  fill(
    section,
    heading,
    outcome,
    messages.length === 0
      ? h("p", { id: "dlq-empty" }, "The dead-letter queue is empty.")
      : [
        h("p", {}, `${plural(messages.length, "message")}${page.more ? " shown; more are waiting" : ""}, oldest first.`),
        deadLetterTable(messages),
        deadLetterActions(section, messages, ctx, (result) => {
          changed();
          return reload(result);
        }),
      ],
    h("button", { type: "button", class: "secondary", onclick: () => reload(null) }, "Refresh the dead-letter queue"),
  );
}

function deadLetterTable(messages) {
  const head = ["Select", "Message", "Reason", "Description", "Deliveries", "Age", "Document"];
  const rows = messages.map((m) =>
    h(
      "tr",
      {},
      h("td", {}, h("input", { type: "checkbox", class: "dlq-select", value: m.sequence_number, id: `dlq-${m.sequence_number}`, "aria-label": `Select message ${m.sequence_number}${m.filename ? ` (${m.filename})` : ""}` })),
      h("th", { scope: "row" }, `#${m.sequence_number}`),
      h("td", {}, m.reason ?? "–"),
      h("td", {}, m.description ?? m.problem ?? "–"),
      h("td", { class: "number" }, String(m.delivery_count)),
      h("td", {}, formatAge(ageOf(m.enqueued_at))),
      h("td", {}, document_(m)),
    ),
  );
  return h("div", { class: "scroll", role: "region", "aria-label": "Dead-lettered messages", tabindex: 0 }, h("table", { class: "data", id: "dlq-table" }, h("thead", {}, h("tr", {}, head.map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows)));
}

function document_(message) {
  if (!message.document_id) return "no document";
  const name = message.filename ?? message.document_id;
  return [h("a", { href: `#/documents/${encodeURIComponent(message.document_id)}` }, name), " ", message.document_status ? statusBadge(message.document_status) : "(no such document)"];
}

function deadLetterActions(section, messages, ctx, reload) {
  const reasons = [...new Set(messages.map((m) => m.reason).filter(Boolean))].sort();
  const reason = h("select", { id: "dlq-reason" }, reasons.map((r) => h("option", { value: r }, r)));
  const chosen = () => [...section.querySelectorAll(".dlq-select:checked")].map((box) => Number(box.value));
  const bySelection = (verb) => {
    const numbers = chosen();
    if (numbers.length === 0) {
      ctx.alert("Select at least one message first.");
      return null;
    }
    return { filter: { sequence_numbers: numbers }, what: `${plural(numbers.length, "selected message")}`, verb };
  };
  const byReason = (verb) => ({ filter: { reason: reason.value }, what: `every message with reason “${reason.value}”`, verb });
  const run = (choice) => choice && act(choice, ctx, reload);
  return h(
    "div",
    { class: "dlq-actions" },
    h(
      "fieldset",
      {},
      h("legend", {}, "Selected messages"),
      h("button", { type: "button", onclick: () => run(bySelection("resubmit")) }, "Re-drive selected"),
      h("button", { type: "button", class: "danger", onclick: () => run(bySelection("purge")) }, "Purge selected…"),
    ),
    reasons.length === 0
      ? null
      : h(
        "fieldset",
        {},
        h("legend", {}, "All messages with one reason"),
        h("div", { class: "field" }, h("label", { for: "dlq-reason" }, "Dead-letter reason"), reason),
        h("button", { type: "button", onclick: () => run(byReason("resubmit")) }, "Re-drive all with this reason"),
        h("button", { type: "button", class: "danger", onclick: () => run(byReason("purge")) }, "Purge all with this reason…"),
      ),
  );
}

async function act({ filter, what, verb }, ctx, reload) {
  ctx.alert(null);
  if (verb === "purge") {
    const sure = await ctx.confirm(`Purging removes ${what} from the dead-letter queue for good. The documents themselves are not changed.`, { title: "Purge dead-lettered messages?", action: "Purge" });
    if (!sure) return;
  }
  const path = verb === "purge" ? paths.dlqPurge() : paths.dlqResubmit();
  const body = verb === "purge" ? { ...filter, confirm: true } : filter;
  let result;
  try {
    result = await api(path, { method: "POST", json: body, signal: ctx.signal });
  } catch (error) {
    if (error.name !== "AbortError") ctx.alert(`The ${verb === "purge" ? "purge" : "re-drive"} failed: ${error.message}`);
    return;
  }
  const summary = batchSummary(result, verb);
  ctx.notify(summary);
  await reload(outcomeBlock(result, summary));
}

function batchSummary(result, verb) {
  const counts = Object.entries(result.counts).map(([outcome, n]) => `${n} ${outcome.replace("_", " ")}`);
  const missing = result.not_found.length ? `; not in the queue any more: ${result.not_found.map((n) => `#${n}`).join(", ")}` : "";
  const done = verb === "purge" ? "Purge finished" : "Re-drive finished";
  return `${done}: ${counts.length ? counts.join(", ") : "no matching messages"}${missing}.`;
}

function outcomeBlock(result, summary) {
  return h(
    "div",
    { class: "card outcome", id: "dlq-outcome" },
    h("p", {}, summary),
    result.results.length ? h("ul", {}, result.results.map((item) => h("li", {}, `#${item.sequence_number}: ${item.outcome.replace("_", " ")} — ${item.detail}`))) : null,
  );
}
