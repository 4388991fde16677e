// Sign in: paste an API key (or an Entra ID access token); it is checked with one request
// and then kept in this tab's sessionStorage only (see api.js).

import { api, credential, paths } from "./api.js";
import { h } from "./dom.js";

export function render(root, ctx) {
  const input = h("input", {
    id: "credential",
    name: "credential",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    "aria-describedby": "credential-help",
  });
  const error = h("p", { id: "credential-error", class: "field-error", hidden: true });
  const form = h(
    "form",
    { class: "card narrow", onsubmit: (event) => submit(event, input, error, ctx) },
    h(
      "div",
      { class: "field" },
      h("label", { for: "credential" }, "API key or access token"),
      input,
      h(
        "p",
        { id: "credential-help", class: "hint" },
        "Ask an administrator for a key (they create one with ",
        h("code", {}, "sheaf keys create"),
        "), or paste an Entra ID access token. It is kept only in this browser tab until you sign out or close the tab.",
      ),
      error,
    ),
    h("button", { type: "submit" }, "Sign in"),
  );
  const intro = ctx.params.get("expired") === "1"
    ? "Your key was refused or has expired. Sign in again to go on."
    : ctx.authRequired()
      ? "This Sheaf needs a key for every request."
      : "This Sheaf lets you in without a key, but you can still sign in with one (to act with its scopes).";
  root.append(h("p", {}, intro), form);
  if (credential.get()) {
    root.append(h("p", { class: "muted" }, "You are signed in; signing in again replaces the key."));
  }
  input.focus();
}

async function submit(event, input, error, ctx) {
  event.preventDefault();
  const value = input.value.trim();
  if (!value) return;
  error.hidden = true;
  input.removeAttribute("aria-invalid");
  credential.set(value);
  try {
    await api(paths.collections(), { signal: ctx.signal });
  } catch (failure) {
    if (failure.name === "AbortError") return;
    if (failure.status === 401 || failure.status === 0) {
      credential.clear();
      showError(input, error, failure.status === 401 ? "That key was not accepted. Check it and try again." : failure.message);
      return;
    }
    // 403 and others: the key is valid, it just cannot list collections.
  }
  input.value = "";
  ctx.notify("Signed in.");
  ctx.onSignedIn();
}

function showError(input, error, message) {
  error.textContent = message;
  error.hidden = false;
  input.setAttribute("aria-invalid", "true");
  input.setAttribute("aria-describedby", "credential-help credential-error");
  input.focus();
}
