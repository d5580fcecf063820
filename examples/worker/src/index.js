// An agent's Worker: session transcripts, bot credentials and pairing codes, sealed in
// the Worker before they reach R2. Keys come from secrets:
//   R2SEAL_KEY                  R2SEAL-SYM-KEY-1…  (the Worker's read-write key)
//   R2SEAL_RECIPIENT_RECOVERY   age1…              (an offline recovery key, write-only here)
//   R2SEAL_POLICIES             {"archive/": ["recovery"]}  (archive/ is write-only for the Worker)
//
//   PUT    /objects/<key>   store the request body, sealed
//   GET    /objects/<key>   the plaintext (Range supported)
//   DELETE /objects/<key>
//   GET    /objects?prefix= a listing with plaintext sizes
//   POST   /demo            store a transcript, a bot credential and a pairing code, read them back
import { SealedBucket, SealError } from "../../../wasm/pkg/index.js";

const STATUS = {
  NO_MATCHING_KEY: 403,
  PLAINTEXT_OBJECT: 409,
  RANGE_NOT_SATISFIABLE: 416,
  HEADER_TOO_LARGE: 413,
  LENGTH_MISMATCH: 400,
  INVALID_ARGUMENT: 400,
  PRECONDITION_UNSUPPORTED: 400,
  PRECONDITION_FAILED: 412,
  // Replaced while a range was read: the client may simply retry.
  OBJECT_CHANGED: 503,
};

function errorResponse(e) {
  if (e instanceof SealError) {
    // Integrity failures (a tampered header is MALFORMED, an unfinished upload
    // UNFINISHED_UPLOAD) are the bucket's fault, not the client's: 502.
    const status = STATUS[e.code] ?? (e.name === "KeyConfigError" ? 500 : 502);
    return Response.json({ error: e.code, message: e.message }, { status });
  }
  return Response.json({ error: "INTERNAL", message: String(e?.message ?? e) }, { status: 500 });
}

async function demo(bucket) {
  const session = `sessions/${new Date().toISOString().slice(0, 10)}/chat-42.jsonl`;
  const transcript = [
    { role: "user", text: "Pair my Telegram bot, please." },
    { role: "assistant", text: "Here is your pairing code: 493-117." },
  ]
    .map((m) => JSON.stringify(m))
    .join("\n");
  await bucket.put(session, transcript, {
    httpMetadata: { contentType: "application/jsonl" },
    customMetadata: { agent: "helper", turns: "2" },
  });
  await bucket.putJson("credentials/telegram-bot.json", { token: "123456:ABC-DEF_example", scopes: ["send"] });
  await bucket.putJson("pairing/493-117.json", { user: "u_17", expires: Date.now() + 600_000 });
  // An archive copy only the offline recovery key can open.
  await bucket.put(`archive/${session}`, transcript);

  const back = await bucket.get(session);
  const archived = await bucket.get(`archive/${session}`).then(
    () => "readable (unexpected)",
    (e) => `not readable by this Worker: ${e.code}`,
  );
  const listing = await bucket.list();
  return {
    transcript: { key: session, text: await back.text(), customMetadata: back.customMetadata },
    credential: await bucket.getJson("credentials/telegram-bot.json"),
    pairing: await bucket.getJson("pairing/493-117.json"),
    archive: archived,
    listing: listing.objects.map(({ key, size, storedSize, sealed }) => ({ key, size, storedSize, sealed })),
  };
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    try {
      const bucket = SealedBucket.fromEnv(env.BUCKET, env);
      if (url.pathname === "/demo" && request.method === "POST") {
        return Response.json(await demo(bucket));
      }
      if (url.pathname === "/objects" && request.method === "GET") {
        const listed = await bucket.list({ prefix: url.searchParams.get("prefix") ?? undefined });
        return Response.json(listed.objects);
      }
      if (!url.pathname.startsWith("/objects/")) {
        return new Response("PUT|GET|DELETE /objects/<key>, GET /objects?prefix=, POST /demo\n", { status: 404 });
      }
      let key;
      try {
        key = decodeURIComponent(url.pathname.slice("/objects/".length));
      } catch {
        // A malformed percent-escape (URIError) is the client's mistake.
        return Response.json({ error: "INVALID_ARGUMENT", message: "the key is not valid percent-encoded UTF-8" }, { status: 400 });
      }
      if (key === "") return new Response("empty key\n", { status: 400 });
      switch (request.method) {
        case "PUT": {
          const length = request.headers.get("content-length");
          const contentType = request.headers.get("content-type");
          const stored = await bucket.put(key, request.body, {
            size: length === null ? undefined : Number(length),
            httpMetadata: contentType ? { contentType } : {},
          });
          return Response.json({ key, size: stored.size, storedSize: stored.storedSize }, { status: 201 });
        }
        case "GET": {
          const range = request.headers.has("range") ? request.headers : undefined;
          const object = await bucket.get(key, { range });
          if (object === null) return new Response("not found\n", { status: 404 });
          const headers = new Headers({ etag: object.httpEtag });
          object.writeHttpMetadata(headers);
          if (object.range) {
            const { offset, length } = object.range;
            headers.set("content-range", `bytes ${offset}-${offset + length - 1}/${object.size}`);
            return new Response(object.body, { status: 206, headers });
          }
          return new Response(object.body, { headers });
        }
        case "DELETE":
          await bucket.delete(key);
          return new Response(null, { status: 204 });
        default:
          return new Response("method not allowed\n", { status: 405 });
      }
    } catch (e) {
      return errorResponse(e);
    }
  },
};
