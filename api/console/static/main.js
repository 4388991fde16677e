// The console's shell: a hash router over a few screens, the session, and shared feedback.
//
// Routes live in the fragment (#/documents?status=failed) so the server serves one page
// and the back button works. Each screen module exports `render(root, ctx)` and may
// return a function that stops whatever it started (polling); `ctx.signal` aborts its
// requests when the person navigates away.

import { api, credential, paths, UNAUTHORIZED } from "./api.js";
import { fill, h } from "./dom.js";
import * as admin from "./admin.js";
import * as dashboard from "./dashboard.js";
import * as documents from "./documents.js";
import * as search from "./search.js";
import * as signIn from "./signin.js";
import * as upload from "./upload.js";

const ROUTES = [
  [/^\/upload$/, upload.render, "Upload"],
  [/^\/documents$/, documents.renderList, "Documents"],
  [/^\/documents\/([^/]+)$/, documents.renderDetail, "Document"],
  [/^\/search$/, search.render, "Search"],
  [/^\/dashboard$/, dashboard.render, "Dashboard"],
  [/^\/admin$/, admin.render, "Admin"],
  [/^\/sign-in$/, signIn.render, "Sign in"],
];

const el = (id) => document.getElementById(id);
const state = { stop: null, controller: null, authRequired: false, first: true };

/** Shared helpers every screen gets. */
function context(params, match, controller) {
  return {
    params,
    match,
    signal: controller.signal,
    setTitle,
    notify,
    alert: showAlert,
    confirm,
    navigate,
    authRequired: () => state.authRequired,
    onSignedIn: signedIn,
  };
}

function setTitle(text) {
  fill(el("title"), text);
  document.title = `${text} – Sheaf console`;
}

/** A polite announcement, for screen readers and in view. */
function notify(text) {
  fill(el("status"), text);
}

/** An error the person should see now; `null` clears it. */
function showAlert(text) {
  const box = el("alert");
  box.hidden = !text;
  fill(box, text ?? "");
}

/** Ask a yes/no question in the page's modal dialog; resolves to true on confirm. */
function confirm(question, { title = "Are you sure?", action = "Confirm" } = {}) {
  const dialog = el("confirm");
  fill(el("confirm-title"), title);
  fill(el("confirm-text"), question);
  fill(el("confirm-ok"), action);
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
  });
}

function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function parseHash() {
  const raw = location.hash.startsWith("#/") ? location.hash.slice(1) : "/upload";
  const [path, query = ""] = raw.split("?");
  return { path, params: new URLSearchParams(query) };
}

function route() {
  if (location.hash && !location.hash.startsWith("#/")) return; // in-page links (#main)
  const { path, params } = parseHash();
  state.stop?.();
  state.controller?.abort();
  state.controller = new AbortController();
  showAlert(null);
  notify("");
  const found = ROUTES.find(([pattern]) => pattern.test(path));
  const [pattern, render, title] = found ?? ROUTES[0];
  markCurrent(path);
  setTitle(title);
  const root = fill(el("screen"));
  const stop = render(root, context(params, path.match(pattern) ?? [], state.controller));
  state.stop = typeof stop === "function" ? stop : null;
  // Move focus to the new screen's heading, unless the screen chose a field itself.
  if (!state.first && !root.contains(document.activeElement)) el("title").focus();
  state.first = false;
}

function markCurrent(path) {
  for (const link of document.querySelectorAll("nav a")) {
    const target = link.getAttribute("href").slice(1);
    const current = path === target || path.startsWith(`${target}/`);
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

/** The header's session area: who is signed in, and the button to change it. */
function renderSession() {
  const box = el("session");
  if (credential.get()) {
    fill(box, h("span", {}, "Signed in"), h("button", { type: "button", class: "secondary", onclick: signOut }, "Sign out"));
  } else if (state.authRequired) {
    fill(box, h("a", { href: "#/sign-in", class: "button secondary" }, "Sign in"));
  } else {
    fill(box, h("span", { class: "muted" }, "No sign-in needed here"), h("a", { href: "#/sign-in", class: "button secondary" }, "Sign in with a key"));
  }
}

function signOut() {
  credential.clear();
  renderSession();
  notify("Signed out. The key was removed from this tab.");
  if (state.authRequired) navigate("#/sign-in");
}

let returnTo = null;

function signedIn() {
  renderSession();
  navigate(returnTo ?? "#/upload");
  returnTo = null;
}

function onUnauthorized() {
  const hadCredential = Boolean(credential.get());
  state.authRequired = true;
  credential.clear();
  renderSession();
  if (!location.hash.startsWith("#/sign-in")) {
    returnTo = location.hash || "#/upload";
    navigate(hadCredential ? "#/sign-in?expired=1" : "#/sign-in");
  }
}

/** Does this Sheaf ask for credentials? One request without any tells (401 or not). */
async function probeAuth() {
  try {
    await api(paths.collections(), { anonymous: true });
  } catch (error) {
    state.authRequired = error.status === 401;
  }
}

async function start() {
  await probeAuth();
  window.addEventListener(UNAUTHORIZED, onUnauthorized);
  window.addEventListener("hashchange", route);
  renderSession();
  if (!location.hash.startsWith("#/")) history.replaceState(null, "", "#/upload");
  if (state.authRequired && !credential.get()) {
    returnTo = location.hash.startsWith("#/sign-in") ? null : location.hash;
    history.replaceState(null, "", "#/sign-in");
  }
  route();
}

start();
