// Signing in with an API key: tried against the service before it is kept on the device.
import { Api, Problem } from "./api.js";

// An Api for the key, or the sentence that says why it cannot be used.
export async function tryKey(key, refusedRole) {
  const candidate = new Api(key);
  try {
    await candidate.get("/event?limit=1000");
    return { api: candidate, error: "" };
  } catch (err) {
    if (err instanceof Problem && err.status === 401) return { api: null, error: "This key is not accepted." };
    if (err instanceof Problem && err.status === 403) return { api: null, error: refusedRole };
    return { api: null, error: err instanceof Problem ? err.message : "The service does not answer; try again when online." };
  }
}
