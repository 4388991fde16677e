// The collection field every screen shares: free text (a new collection is just a new
// name) with the collections in use offered as suggestions, and the last one chosen kept
// for the next screen.

import { api, paths } from "./api.js";
import { h, plural } from "./dom.js";

const LAST = "sheaf.collection";
export const NAME_PATTERN = "[A-Za-z0-9][A-Za-z0-9._\\-]{0,127}";

export function lastCollection() {
  return sessionStorage.getItem(LAST) ?? "";
}

export function rememberCollection(name) {
  if (name) sessionStorage.setItem(LAST, name);
}

/** The collections in use ({name, documents, counts}), or [] if they cannot be listed. */
export async function loadCollections(signal) {
  try {
    return (await api(paths.collections(), { signal })).collections;
  } catch (error) {
    if (error.name === "AbortError") throw error;
    return []; // a key without the right scope can still type a name
  }
}

/**
 * A labelled input with suggestions. `ready` resolves (never rejects) once suggestions
 * are in; fills in the remembered (or first) collection when `value` is not given.
 */
export function collectionField(signal, { id = "collection", value = "", required = true } = {}) {
  const listId = `${id}-options`;
  const input = h("input", {
    id,
    name: "collection",
    list: listId,
    required,
    pattern: NAME_PATTERN,
    autocomplete: "off",
    spellcheck: "false",
    value: value || lastCollection(),
    "aria-describedby": `${id}-hint`,
  });
  const datalist = h("datalist", { id: listId });
  const element = h(
    "div",
    { class: "field" },
    h("label", { for: id }, "Collection"),
    input,
    datalist,
    h("p", { id: `${id}-hint`, class: "hint" }, "Letters, digits, '.', '_' or '-'. Start typing to see the collections in use."),
  );
  const ready = loadCollections(signal).then((collections) => {
    datalist.replaceChildren(...collections.map((c) => h("option", { value: c.name }, `${c.name} (${plural(c.documents, "document")})`)));
    if (!input.value && collections.length > 0) input.value = collections[0].name;
    return collections;
  }, () => []); // aborted: the person has moved on
  return { element, input, ready };
}
