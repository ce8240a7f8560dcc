// The gate's service worker: the app shell and the decoder's WebAssembly, cached at install,
// so that the page opens and scans with no network. Served from the cache at once and
// refreshed from the network behind it (a new release shows at the next start). The API is
// never cached: its requests pass through untouched.
// Named for what it holds (a digest of the shell's files, which tests/test_browser.py checks):
// a release that changes any of them gets a new cache, and the old one is dropped on activate.
const CACHE = "tickets-gate-e3c8bbe7394f";
const SHELL = [
  "./", "index.html", "gate.js", "book.js", "camera.js", "device.js", "sync.js", "verdicts.js", "token.js",
  "gate.css", "manifest.json", "icon.svg",
  "../shared/api.js", "../shared/signin.js", "../shared/base.css",
  "../vendor/barcode-detector/ponyfill.js", "../vendor/zxing-wasm/zxing_reader.wasm",
  "../vendor/noble-ed25519/index.js",
].map((path) => new URL(path, self.registration.scope).href);

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys()
    .then((names) => Promise.all(names.filter((n) => n !== CACHE).map((n) => caches.delete(n))))
    .then(() => self.clients.claim()));
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  url.search = "";
  if (event.request.method !== "GET" || !SHELL.includes(url.href)) return;
  event.respondWith(caches.open(CACHE).then(async (cache) => {
    const cached = await cache.match(url.href);
    const fresh = fetch(event.request).then((response) => {
      if (response.ok) cache.put(url.href, response.clone());
      return response;
    });
    if (cached) {
      event.waitUntil(fresh.catch(() => undefined));
      return cached;
    }
    return fresh;
  }));
});
