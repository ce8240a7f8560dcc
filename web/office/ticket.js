// One printable ticket: /office/ticket.html?id=<ticket id>, with the box office's key.
import { Api } from "../shared/api.js";
import { ticketCard } from "./cards.js";

const settings = JSON.parse(localStorage.getItem("tickets.office") || "null");
const api = new Api(settings?.key || "");
const id = new URLSearchParams(location.search).get("id") || "";
const status = document.getElementById("status");

async function main() {
  const ticket = (await api.get(`/ticket/${encodeURIComponent(id)}`)).body;
  let name = ticket.event;
  if (ticket.event !== "default") {
    try { name = (await api.get(`/event/${ticket.event}`)).body.name; } catch { /* the id will do */ }
  }
  document.getElementById("issued").append(await ticketCard(api, ticket, name));
  document.title = `Ticket ${ticket.id} · Tickets`;
}

document.getElementById("print").addEventListener("click", () => window.print());
main().catch((err) => { status.textContent = `This ticket cannot be shown: ${err.message}`; });
