#!/usr/bin/env bash
# Re-vendor the pinned front-end files from the npm registry (package.json, package-lock.json):
#   bash web/vendor/vendor.sh
# The files are committed, with their licences, and checked against SHA256SUMS by the tests,
# so that neither a page nor `make test` needs the registry.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tests="$here/../../tests/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$here/package.json" "$here/package-lock.json" "$work/"
(cd "$work" && npm ci --no-audit --no-fund --ignore-scripts --silent)
nm="$work/node_modules"
# barcode-detector's classic-script build; its ZXing glue is zxing-wasm 3.1.3's, so that
# version's reader .wasm goes beside it (served from here, never from a CDN).
install -D -m 644 "$nm/barcode-detector/dist/iife/ponyfill.js" "$here/barcode-detector/ponyfill.js"
install -D -m 644 "$nm/barcode-detector/LICENSE" "$here/barcode-detector/LICENSE"
install -D -m 644 "$nm/zxing-wasm/dist/reader/zxing_reader.wasm" "$here/zxing-wasm/zxing_reader.wasm"
install -D -m 644 "$nm/zxing-wasm/LICENSE" "$here/zxing-wasm/LICENSE"
# The .wasm is zxing-cpp compiled: its Apache-2.0 licence goes beside it too (the text from
# Debian's base-files, as zxing-wasm's package carries only its own MIT licence).
{ printf '%s\n' "zxing_reader.wasm is compiled, by zxing-wasm 3.1.3 (MIT: LICENSE beside this file), from" \
    "zxing-cpp (github.com/zxing-cpp/zxing-cpp), which is licensed under the Apache License," \
    "Version 2.0. Its text follows." ""; cat /usr/share/common-licenses/Apache-2.0; } \
  > "$here/zxing-wasm/LICENSE-zxing-cpp"
install -D -m 644 "$nm/@noble/ed25519/index.js" "$here/noble-ed25519/index.js"
install -D -m 644 "$nm/@noble/ed25519/LICENSE" "$here/noble-ed25519/LICENSE"
# For the tests only: the accessibility checks.
install -D -m 644 "$nm/axe-core/axe.min.js" "$tests/axe-core/axe.min.js"
install -D -m 644 "$nm/axe-core/LICENSE" "$tests/axe-core/LICENSE"
grep -q 'ZXING_WASM_VERSION' "$here/barcode-detector/ponyfill.js"
(cd "$here/../.." && sha256sum web/vendor/*/* tests/vendor/*/* | grep -v -e package -e SHA256SUMS \
  > web/vendor/SHA256SUMS)
echo "vendored; web/vendor/SHA256SUMS written"
