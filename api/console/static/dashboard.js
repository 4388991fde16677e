// Dashboard: the system at a glance, from the database's attempt history (no Prometheus
// needed). Documents completed and failed over time, failures by error code, each stage's
// p50/p95, the queue over time and the workers at work; refreshed every two seconds. The
// window is in the address (#/dashboard?window=900), so a view can be bookmarked.

import { api, paths } from "./api.js";
import { lines, meter, stackedBars } from "./charts.js";
import { ageOf, fill, formatAge, formatSeconds, h, plural } from "./dom.js";

const REFRESH_MS = 2000;
const WINDOWS = [
  [300, "5 minutes"],
  [900, "15 minutes"],
  [3600, "1 hour"],
  [21600, "6 hours"],
  [86400, "24 hours"],
];
const OUTCOMES = [
  ["completed", "completed"],
  ["retried", "failed, will retry"],
  ["failed", "failed for good"],
];

export function render(root, ctx) {
  const seconds = Number(ctx.params.get("window")) || 900;
  const sections = {
    throughput: section("throughput", "Documents completed and failed"),
    queue: section("queue", "Queue"),
    failures: section("failures", "Failures by error code"),
    stages: section("stages", "Time per stage"),
    workers: section("workers", "Workers"),
  };
  root.append(windowPicker(seconds, ctx), h("p", { class: "muted", id: "dashboard-updated" }, "Loading…"), ...Object.values(sections));
  let timer = null;
  const tick = async () => {
    await refresh(sections, seconds, ctx);
    if (!ctx.signal.aborted) timer = setTimeout(tick, REFRESH_MS);
  };
  tick();
  return () => clearTimeout(timer);
}

function section(id, title) {
  return h("section", { "aria-labelledby": `${id}-title`, id: `dashboard-${id}`, class: "panel" }, h("h2", { id: `${id}-title` }, title));
}

function windowPicker(current, ctx) {
  const known = WINDOWS.some(([seconds]) => seconds === current);
  const options = [...WINDOWS, ...(known ? [] : [[current, formatAge(current)]])].sort((a, b) => a[0] - b[0]);
  const select = h(
    "select",
    { id: "dashboard-window", onchange: () => ctx.navigate(`#/dashboard?window=${select.value}`) },
    options.map(([seconds, name]) => h("option", { value: seconds, selected: seconds === current }, `the last ${name}`)),
  );
  return h("div", { class: "filters" }, h("div", { class: "field" }, h("label", { for: "dashboard-window" }, "Show"), select));
}

async function refresh(sections, seconds, ctx) {
  let body;
  try {
    body = await api(paths.dashboard(seconds), { signal: ctx.signal });
  } catch (error) {
    if (error.name === "AbortError") return;
    const text = error.status === 403 ? "Your key may not see the dashboard: it needs the admin scope over every collection." : `Could not load the dashboard: ${error.message}`;
    ctx.alert(text);
    return;
  }
  ctx.alert(null);
  const span = formatAge(body.window_seconds);
  const updated = document.getElementById("dashboard-updated");
  if (updated) fill(updated, `Over the last ${span}; updated ${new Date(body.generated_at).toLocaleTimeString()}.${body.complete ? "" : " Only the newest 20,000 attempts are counted."}`);
  showThroughput(sections.throughput, body, span);
  showQueue(sections.queue, body, span);
  showFailures(sections.failures, body);
  showStages(sections.stages, body);
  showWorkers(sections.workers, body);
}

function replace(section, ...children) {
  fill(section, section.firstChild, ...children);
}

function legend(entries, prefix) {
  return h("ul", { class: "legend" }, entries.map(([key, name]) => h("li", {}, h("span", { class: `swatch ${prefix}-${key}`, "aria-hidden": "true" }), name)));
}

function numbers(caption, head, rows) {
  return h(
    "details",
    { class: "numbers" },
    h("summary", {}, `${caption}: the numbers`),
    h("table", { class: "data compact" }, h("thead", {}, h("tr", {}, head.map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows)),
  );
}

function clock(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

// -- throughput ----------------------------------------------------------------------------

function showThroughput(section, body, span) {
  const buckets = body.throughput;
  const total = (key) => buckets.reduce((sum, b) => sum + b[key], 0);
  const perMinute = (n) => (n * 60) / body.window_seconds;
  const summary = `${total("completed")} completed, ${total("failed")} failed for good, ${total("retried")} failed and retried in the last ${span}`;
  const bucketName = formatAge(body.bucket_seconds);
  replace(
    section,
    h("p", { id: "throughput-summary" }, `${summary} (${perMinute(total("completed")).toFixed(1)} completed per minute).`),
    legend(OUTCOMES, "bar"),
    stackedBars(buckets, OUTCOMES.map(([key]) => key), { label: `Attempts per ${bucketName}: ${summary}.`, xLabels: [`${span} ago`, "now"] }),
    numbers(
      `Attempts per ${bucketName}`,
      ["From", "Completed", "Failed, will retry", "Failed for good"],
      buckets.filter((b) => b.completed + b.failed + b.retried > 0).map((b) => h("tr", {}, h("th", { scope: "row" }, clock(b.start)), [b.completed, b.retried, b.failed].map((n) => h("td", { class: "number" }, String(n))))),
    ),
  );
}

// -- queue ---------------------------------------------------------------------------------

function showQueue(section, body, span) {
  const samples = body.queue;
  const now = samples.at(-1);
  const end = new Date(body.generated_at).getTime();
  const domain = [end - body.window_seconds * 1000, end];
  const at = (q) => new Date(q.at).getTime();
  const since = body.queue_sampled_since ? `sampled since ${clock(body.queue_sampled_since)}` : "sampled from now on";
  replace(
    section,
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Queued now"),
      h("dd", { id: "queue-depth" }, String(now.queued)),
      h("dt", {}, "Being processed now"),
      h("dd", { id: "queue-processing" }, String(now.processing)),
      h("dt", {}, "Oldest ready document waiting"),
      h("dd", { id: "queue-oldest" }, now.oldest_ready_age_seconds === null ? "none waiting" : formatAge(now.oldest_ready_age_seconds)),
    ),
    h("h3", {}, "Documents queued and processing"),
    legend([["queued", "queued"], ["processing", "processing"]], "line"),
    lines(
      [
        { key: "queued", points: samples.map((q) => [at(q), q.queued]) },
        { key: "processing", points: samples.map((q) => [at(q), q.processing]) },
      ],
      domain,
      { label: `Queue depth over the last ${span}, ${since}: ${now.queued} queued and ${now.processing} processing now.`, xLabels: [`${span} ago`, "now"] },
    ),
    h("h3", {}, "Age of the oldest ready document"),
    lines([{ key: "age", points: samples.map((q) => [at(q), q.oldest_ready_age_seconds ?? 0]) }], domain, {
      label: `Oldest ready age over the last ${span}: ${now.oldest_ready_age_seconds === null ? "none waiting now" : `${formatAge(now.oldest_ready_age_seconds)} now`}.`,
      xLabels: [`${span} ago`, "now"],
      formatY: (v) => formatAge(v),
    }),
    h("p", { class: "hint" }, `The queue is ${since} by this API process (every 5 s); the database keeps no history of it.`),
  );
}

// -- failures and stage timings ------------------------------------------------------------

function showFailures(section, body) {
  const failures = body.failures;
  if (failures.length === 0) {
    replace(section, h("p", { id: "failures-none" }, "No attempt failed in this window."));
    return;
  }
  const most = failures[0].count;
  replace(
    section,
    h(
      "table",
      { class: "data compact", id: "failures-table" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Error code"), h("th", { scope: "col", class: "number" }, "Failed attempts"), h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Share")))),
      h("tbody", {}, failures.map((f) => h("tr", {}, h("th", { scope: "row" }, h("code", {}, f.error_code)), h("td", { class: "number" }, String(f.count)), h("td", {}, meter(f.count, most, "failed"))))),
    ),
    h("p", { class: "hint" }, h("a", { href: "#/documents?status=failed" }, "The failed documents"), " say why each one failed."),
  );
}

function showStages(section, body) {
  const stages = body.stages;
  if (stages.length === 0) {
    replace(section, h("p", { id: "stages-none" }, "No document completed in this window, so there are no timings yet."));
    return;
  }
  const slowest = Math.max(...stages.filter((t) => t.stage !== "total").map((t) => t.p95_seconds), 0);
  replace(
    section,
    legend([["p50", "p50 (half the documents took less)"], ["p95", "p95 (all but one in twenty took less)"]], "bar"),
    h(
      "table",
      { class: "data", id: "stages-table" },
      h("thead", {}, h("tr", {}, ["Stage", "Documents", "p50", "p95"].map((t, i) => h("th", { scope: "col", class: i ? "number" : null }, t)), h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Bars")))),
      h(
        "tbody",
        {},
        stages.map((t) =>
          h(
            "tr",
            {},
            h("th", { scope: "row" }, t.stage),
            h("td", { class: "number" }, String(t.count)),
            h("td", { class: "number" }, formatSeconds(t.p50_seconds)),
            h("td", { class: "number" }, formatSeconds(t.p95_seconds)),
            h("td", {}, t.stage === "total" ? null : [meter(t.p50_seconds, slowest, "p50"), meter(t.p95_seconds, slowest, "p95")]),
          ),
        ),
      ),
    ),
  );
}

// -- workers -------------------------------------------------------------------------------

function showWorkers(section, body) {
  const workers = body.workers;
  if (workers.length === 0) {
    replace(section, h("p", { id: "workers-none" }, "No worker has touched a document in this window."));
    return;
  }
  replace(
    section,
    h("p", {}, `${plural(workers.length, "worker")} seen in this window.`),
    h(
      "div",
      { class: "scroll", role: "region", "aria-label": "Workers and their documents", tabindex: 0 },
      h(
        "table",
        { class: "data", id: "workers-table" },
        h("thead", {}, h("tr", {}, ["Worker", "Now", "Last heartbeat", "Last seen", "Completed", "Failed"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, workers.map(workerRow)),
      ),
    ),
    h("p", { class: "hint" }, "Sheaf knows workers by their attempts: one that has not held a document in this window is not listed."),
  );
}

function workerRow(worker) {
  const working = worker.in_flight.length > 0;
  return h(
    "tr",
    { "data-worker": worker.id },
    h("th", { scope: "row" }, h("code", {}, worker.id)),
    h(
      "td",
      {},
      working
        ? h("ul", { class: "plain" }, worker.in_flight.map((f) => h("li", {}, h("a", { href: `#/documents/${encodeURIComponent(f.id)}` }, f.filename), ` (${f.stage ?? "starting"}, for ${formatAge(ageOf(f.started_at))})`)))
        : "idle",
    ),
    h("td", {}, worker.last_heartbeat_at ? `${formatAge(ageOf(worker.last_heartbeat_at))} ago` : "–"),
    h("td", {}, `${formatAge(ageOf(worker.last_seen_at))} ago`),
    h("td", { class: "number" }, String(worker.completed)),
    h("td", { class: "number" }, String(worker.failed)),
  );
}
