// The gate's camera: reads QR codes from the video, with the browser's BarcodeDetector where
// it has QR codes, else the vendored ZXing WebAssembly reader, and hands each code to the page
// once per pause (a held ticket is seen many times a second).
const SAME_CODE_PAUSE_MS = 2500;
const FRAME_EVERY_MS = 100;
// Our tickets are QR codes; tickets sold elsewhere (imported) may carry any of the others.
const FORMATS = ["qr_code", "code_128", "pdf417", "aztec", "data_matrix"];

export class Camera {
  // video, toggle (its button), status (a line of text); onCode(code) gets each new code;
  // probe records which decoder ran, for the browser tests.
  constructor({ video, toggle, status, onCode, probe }) {
    Object.assign(this, { video, toggle, status, onCode, probe });
    this.stream = null;
    this.detector = null;
    this.on = false;
    this.lastCode = "";
    this.lastAt = 0;
  }

  // Whether a code is new: the camera's same code within the pause is not; any code read
  // restarts the pause, so a typed code is not read again off the camera at once.
  fresh(code, fromCamera) {
    if (fromCamera && code === this.lastCode && Date.now() - this.lastAt < SAME_CODE_PAUSE_MS) return false;
    if (fromCamera) this.lastCode = code;
    this.lastAt = Date.now();
    return true;
  }

  async start() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      this.status.textContent = "No camera here: use a hand scanner or type the code.";
      return;
    }
    try {
      this.detector = this.detector || await this.makeDetector();
      this.stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
      this.video.srcObject = this.stream;
      await this.video.play();
      this.on = true;
      this.toggle.textContent = "Stop camera";
      const decoder = this.probe.detector === "native" ? "built-in decoder" : "ZXing decoder";
      this.status.textContent = `Camera on (${decoder}).`;
      this.loop();
    } catch (err) {
      this.status.textContent = `Camera unavailable (${err.name || err}): use a hand scanner or type the code.`;
    }
  }

  stop() {
    this.on = false;
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    this.stream = null;
    this.toggle.textContent = "Start camera";
    this.status.textContent = "Camera off.";
  }

  async makeDetector() {
    if ("BarcodeDetector" in window) {
      try {
        const supported = await window.BarcodeDetector.getSupportedFormats();
        if (supported.includes("qr_code")) {
          this.probe.detector = "native";
          return new window.BarcodeDetector({ formats: FORMATS.filter((f) => supported.includes(f)) });
        }
      } catch { /* fall through to the polyfill */ }
    }
    const lib = window.BarcodeDetectionAPI;
    lib.prepareZXingModule({
      overrides: {
        // The reader's WebAssembly, vendored beside the page: never a CDN.
        locateFile: (path, prefix) => (path.endsWith(".wasm")
          ? new URL(`../vendor/zxing-wasm/${path}`, import.meta.url).href : prefix + path),
      },
      fireImmediately: true,
    });
    this.probe.detector = "zxing-wasm";
    return new lib.BarcodeDetector({ formats: FORMATS });
  }

  async loop() {
    while (this.on) {
      if (this.video.readyState >= 2) {
        try {
          for (const found of await this.detector.detect(this.video)) {
            if (found.rawValue) await this.onCode(found.rawValue);
          }
        } catch { /* a frame that cannot be read: the next one */ }
      }
      await new Promise((resolve) => setTimeout(resolve, FRAME_EVERY_MS));
    }
  }
}
