// The Devices panel (admins): make a device and show its one-use enrolment code as a QR code
// and a link, see every device's state and when it was last seen, roll or revoke one.
import { el, formatTime } from "../shared/api.js";

const $ = (id) => document.getElementById(id);

export class DevicesPanel {
  // events(): the events the desk loaded; api: the signed-in admin's.
  constructor(api, events) {
    this.api = api;
    this.events = events;
    $("new-device").addEventListener("submit", (e) => this.make(e));
    $("device-event").addEventListener("change", () => this.loadLists());
    $("device-role").addEventListener("change", () => this.bindable());
  }

  async open() {
    $("devices").hidden = false;
    const options = [el("option", { value: "", text: "Any event" }),
      ...this.events().map((e) => el("option", { value: e.id, text: e.name }))];
    $("device-event").replaceChildren(...options);
    await this.loadLists();
    await this.refresh();
  }

  // Lists and a direction bind a scanner only.
  bindable() {
    const scanner = $("device-role").value === "scanner";
    $("device-list").disabled = !scanner || !$("device-event").value;
    $("device-direction").disabled = !scanner;
  }

  async loadLists() {
    const eventId = $("device-event").value;
    const lists = eventId ? (await this.api.get(`/event/${eventId}/list`)).body : [];
    $("device-list").replaceChildren(el("option", { value: "", text: "Any list" }),
      ...lists.map((l) => el("option", { value: l.id, text: l.name })));
    this.bindable();
  }

  async make(event) {
    event.preventDefault();
    const body = { name: $("device-name").value.trim(), role: $("device-role").value };
    if ($("device-event").value) body.event = $("device-event").value;
    if (!$("device-list").disabled && $("device-list").value) body.lists = [$("device-list").value];
    if (!$("device-direction").disabled && $("device-direction").value) body.direction = $("device-direction").value;
    try {
      const made = (await this.api.post("/device", body, { idempotencyKey: crypto.randomUUID() })).body;
      const qr = URL.createObjectURL(new Blob([made.enrolment.qr_svg], { type: "image/svg+xml" }));
      $("enrolment-qr").src = qr;
      $("enrolment-link").href = made.enrolment.url;
      $("enrolment-until").textContent = formatTime(made.enrolment.expires_at);
      $("enrolment").hidden = false;
      $("devices-status").textContent = `Device ${made.name} made: enrol it now.`;
      $("device-name").value = "";
      await this.refresh();
    } catch (err) {
      $("devices-status").textContent = `No device was made: ${err.message}`;
    }
  }

  async refresh() {
    const devices = (await this.api.get("/device")).body;
    const names = Object.fromEntries(this.events().map((e) => [e.id, e.name]));
    $("device-rows").replaceChildren(...devices.map((d) => {
      const bound = [d.event ? names[d.event] || d.event : "", d.lists.length ? `list ${d.lists.join(", ")}` : "",
                     d.direction || ""].filter(Boolean).join(" · ") || "—";
      const actions = el("td");
      if (d.state === "active") actions.append(this.button("Roll key", () => this.roll(d)), " ");
      if (d.state !== "revoked") actions.append(this.button("Revoke", () => this.revoke(d)));
      return el("tr", { "data-device": d.id }, el("td", { text: d.name }), el("td", { text: d.role }),
        el("td", { text: bound }), el("td", { class: `state ${d.state}`, text: d.state }),
        el("td", { text: d.last_seen ? formatTime(d.last_seen) : "never" }), actions);
    }));
  }

  button(text, action) {
    const b = el("button", { type: "button", class: "secondary", text });
    b.addEventListener("click", action);
    return b;
  }

  async roll(device) {
    try {
      const rolled = (await this.api.post(`/device/${device.id}/roll`)).body;
      $("devices-status").textContent = `${device.name} has a new key (its old one is refused now): ${rolled.key}`;
    } catch (err) {
      $("devices-status").textContent = `Not rolled: ${err.message}`;
    }
    await this.refresh();
  }

  async revoke(device) {
    if (!window.confirm(`Revoke ${device.name}? It is refused everywhere within a second, for good.`)) return;
    try {
      await this.api.post(`/device/${device.id}/revoke`);
      $("devices-status").textContent = `${device.name} is revoked.`;
    } catch (err) {
      $("devices-status").textContent = `Not revoked: ${err.message}`;
    }
    await this.refresh();
  }
}
