/**
 * The `data` of each server-sent event in a response body, as it arrives. Multi-line data is
 * joined with newlines; comments and other fields are skipped.
 */
export async function* sseData(body: AsyncIterable<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of body) {
    // Events end at a blank line; CRs never appear inside JSON data, so dropping them normalizes CRLF.
    buffer += decoder.decode(chunk, { stream: true }).replaceAll('\r', '');
    let end: number;
    while ((end = buffer.indexOf('\n\n')) !== -1) {
      const data = eventData(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (data !== null) yield data;
    }
  }
  const last = eventData(buffer + decoder.decode());
  if (last !== null) yield last;
}

function eventData(event: string): string | null {
  const lines = event
    .split('\n')
    .filter((line) => line.startsWith('data:'))
    .map((line) => line.slice(line.startsWith('data: ') ? 6 : 5));
  return lines.length === 0 ? null : lines.join('\n');
}
