// Every call to Sheaf's /v1 API goes through `api()`.
//
// The credential (an API key, or an Entra ID access token) lives in sessionStorage: it
// survives a reload of this tab, is gone when the tab closes, is never put in a URL and
// is sent only as the `Authorization: Bearer` header of same-origin requests. A 401 means
// it is missing, wrong or expired: the console then asks for it again.

const STORAGE_KEY = "sheaf.credential";

export const credential = {
  get() {
    return sessionStorage.getItem(STORAGE_KEY);
  },
  set(value) {
    sessionStorage.setItem(STORAGE_KEY, value);
  },
  clear() {
    sessionStorage.removeItem(STORAGE_KEY);
  },
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Fires when the API answers 401, so the console can show the sign-in. */
export const UNAUTHORIZED = "sheaf:unauthorized";

/**
 * Call the API and return its JSON body; throw ApiError with the server's own `code` and
 * human `message` on any error answer. `json` is sent as a JSON body, `form` as multipart;
 * `anonymous` leaves the credential out (to learn whether this Sheaf asks for one).
 */
export async function api(path, { method = "GET", json, form, signal, anonymous = false } = {}) {
  const headers = { Accept: "application/json" };
  const secret = anonymous ? null : credential.get();
  if (secret) headers.Authorization = `Bearer ${secret}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, signal, cache: "no-store" });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "unreachable", "Sheaf could not be reached. Check that it is running, then try again.");
  }
  const data = await response.json().catch(() => null);
  if (signal?.aborted) throw new DOMException("The request was aborted.", "AbortError");
  if (response.status === 401 && !anonymous) {
    window.dispatchEvent(new CustomEvent(UNAUTHORIZED, { detail: data?.error?.message }));
  }
  if (!response.ok) {
    const error = data?.error ?? {};
    throw new ApiError(response.status, error.code ?? `http_${response.status}`, error.message ?? `The server answered ${response.status}.`);
  }
  return data;
}

/** Path pieces for URLs: ids and names are encoded even though the server restricts them. */
export const enc = encodeURIComponent;

export const paths = {
  collections: () => "/v1/collections",
  documents: (collection, query = {}) => withQuery(`/v1/collections/${enc(collection)}/documents`, query),
  search: (collection, q, k, mode) => withQuery(`/v1/collections/${enc(collection)}/search`, { q, k, mode }),
  document: (id) => `/v1/documents/${enc(id)}`,
  retry: (id) => `/v1/documents/${enc(id)}/retry`,
  chunks: (id, query = {}) => withQuery(`/v1/documents/${enc(id)}/chunks`, query),
  content: (id) => `/v1/documents/${enc(id)}/content`,
  stats: () => "/v1/stats",
  dashboard: (window) => withQuery("/v1/admin/dashboard", { window }),
  failed: (query = {}) => withQuery("/v1/admin/failed", query),
  dlq: (query = {}) => withQuery("/v1/admin/dlq", query),
  dlqResubmit: () => "/v1/admin/dlq/resubmit",
  dlqPurge: () => "/v1/admin/dlq/purge",
};

function withQuery(path, query) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") params.set(name, value);
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

/** Upload one file into a collection; resolves to the document the server made (or had). */
export function uploadFile(collection, file, signal) {
  const form = new FormData();
  form.append("file", file, file.name);
  return api(paths.documents(collection), { method: "POST", form, signal });
}

/**
 * Save a file the API serves (with the credential, which a plain link could not send):
 * fetched into memory, then handed to the browser's own download through a blob URL.
 */
export async function download(path, filename, signal) {
  const headers = {};
  const secret = credential.get();
  if (secret) headers.Authorization = `Bearer ${secret}`;
  const response = await fetch(path, { headers, signal, cache: "no-store" });
  if (!response.ok) {
    const data = await response.json().catch(() => null);
    if (response.status === 401) window.dispatchEvent(new CustomEvent(UNAUTHORIZED, { detail: data?.error?.message }));
    throw new ApiError(response.status, data?.error?.code ?? `http_${response.status}`, data?.error?.message ?? `The server answered ${response.status}.`);
  }
  const url = URL.createObjectURL(await response.blob());
  const link = Object.assign(document.createElement("a"), { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
