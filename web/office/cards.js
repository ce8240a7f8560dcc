// A ticket as printed: its QR code (fetched with the key, shown from a blob), event, type,
// holder, seat and id.
import { el } from "../shared/api.js";

export async function ticketCard(api, ticket, eventName) {
  const qr = el("img", { alt: `QR code of ticket ${ticket.id}`, width: "224", height: "224" });
  const details = el("dl", {},
    el("dt", { text: "Event" }), el("dd", { text: eventName || ticket.event }),
    el("dt", { text: "Type" }), el("dd", { text: ticket.type || "general admission" }),
    el("dt", { text: "Holder" }), el("dd", { text: ticket.holder || "—" }),
    el("dt", { text: "Seat" }), el("dd", { text: ticket.seat || "free seating" }));
  const card = el("li", { class: "ticket-card", "data-ticket": ticket.id },
    qr, el("h3", { text: eventName || ticket.event }), details, el("p", { class: "id", text: ticket.id }));
  try {
    const svg = await api.request("GET", `/ticket/${ticket.id}/qr.svg`, { raw: true });
    qr.src = URL.createObjectURL(svg);
  } catch (err) {
    qr.replaceWith(el("p", { class: "error", text: `No QR code: ${err.message}` }));
  }
  return card;
}
