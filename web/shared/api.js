// The service's HTTP API from a page: bearer key, JSON, problem+json, and a timeout. What a
// page must treat as "no answer" (the network, a timeout, a 5xx) is an Unreachable, so that
// the gate can fall back to its offline check; any other refusal is a Problem.

export class Unreachable extends Error {}

export class Problem extends Error {
  constructor(status, body) {
    super(body && body.detail ? body.detail : `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

export class Api {
  constructor(key, { timeoutMs = 8000 } = {}) {
    this.key = key;
    this.timeoutMs = timeoutMs;
  }

  async request(method, path, { body, timeoutMs, idempotencyKey, raw = false } = {}) {
    const headers = { Accept: "application/json, application/problem+json" };
    if (this.key) headers.Authorization = `Bearer ${this.key}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs ?? this.timeoutMs);
    let response;
    try {
      response = await fetch(path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        signal: abort.signal, cache: "no-store", credentials: "omit",
      });
      if (response.status >= 500) throw new Unreachable(`HTTP ${response.status}`);
      if (raw && response.ok) return await response.blob();
      const text = await response.text();
      const parsed = text ? JSON.parse(text) : null;
      if (!response.ok) throw new Problem(response.status, parsed);
      return { body: parsed, headers: response.headers };
    } catch (err) {
      if (err instanceof Problem || err instanceof Unreachable) throw err;
      throw new Unreachable(err && err.name === "AbortError" ? "timed out" : String(err));
    } finally {
      clearTimeout(timer);
    }
  }

  get(path, options) {
    return this.request("GET", path, options);
  }

  post(path, body, options) {
    return this.request("POST", path, { ...options, body });
  }
}

// Every page of an API walk that follows `Link: rel=next`, up to `maxPages`.
export function nextLink(headers) {
  const link = headers.get("Link") || "";
  const match = link.match(/<([^>]+)>;\s*rel="next"/);
  return match ? match[1] : null;
}

export function formatTime(seconds) {
  if (seconds === null || seconds === undefined) return "";
  return new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) node.append(child);
  return node;
}
