// This page as an enrolled device: enrolling with the one-use code the box office shows (read
// by the camera or opened as a link), and knowing when the service says the device's key was
// revoked or replaced (docs/trust.md#devices).
import { Api, Problem } from "../shared/api.js";

const CODE = /(?:^|#enrol=)(tke_[0-9a-f]{16}\.[A-Za-z0-9_-]{43})$/;

// The enrolment code in a scanned text or a link, or null.
export function enrolmentCode(text) {
  const match = text.trim().match(CODE);
  return match ? match[1] : null;
}

// Enrols with the code: {device, key}, or a Problem (403 enrolment-refused: used, expired or
// unknown).
export async function enrol(code) {
  const hardware = navigator.userAgent.replace(/[\x00-\x1f\x7f]/g, "").slice(0, 120) || undefined;
  return (await new Api("").post("/device/enrol", { token: code, software: "tickets gate page", hardware })).body;
}

// Whether an answer says this device's key was revoked or rolled.
export function isRevoked(err) {
  return err instanceof Problem && err.status === 401 && String(err.body.type || "").endsWith("device-revoked");
}
