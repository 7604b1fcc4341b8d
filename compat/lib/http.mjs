// The one place a tidesync compat answer becomes JSON or an error (both handler modules use it).

/** A refusal from the server: its HTTP status and the `{code, message}` of its JSON body. */
export class TidesyncError extends Error {
  constructor(status, code, message) {
    super(`tidesync answered ${status} ${code}: ${message}`);
    this.name = 'TidesyncError';
    this.status = status;
    this.code = code;
  }
}

/** The JSON body of a 2xx answer; any other answer throws a `TidesyncError`. */
export async function answer(response) {
  if (response.ok) return response.json();
  const text = await response.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = { code: 'unexpected_answer', message: text.slice(0, 200) || response.statusText };
  }
  throw new TidesyncError(response.status, body.code ?? 'unexpected_answer', body.message ?? text.slice(0, 200));
}
