// The test Worker: runs inside workerd (miniflare). Each `POST /t/<name>` runs one test
// against the real R2 binding and answers {ok, ...} or {ok: false, error}; the node
// test runner (sealed-bucket.test.mjs) asserts on the answers. Helper routes move raw
// objects in and out for the cross-implementation tests.
import {
  SealedBucket,
  SealKeys,
  SealError,
  KeyConfigError,
  sealBytes,
  openBytes,
  sealedLength,
  plaintextLength,
  DescriptorError,
  InvalidArgumentError,
  IntegrityError,
  InvalidJsonError,
  ObjectChangedError,
  PreconditionFailedError,
  HeaderTooLargeError,
  fromFileForm,
  toFileForm,
  wasmMemoryBytes,
} from "../pkg/index.js";
// The vector checker is not in the shipped module: a second build of the same core with
// `r2seal::testkit` (scripts/build.mjs, pkg-vectors/), loaded by this test Worker only.
import { initSync as initVectors, checkVector, checkNameVector } from "../pkg-vectors/r2seal_wasm.js";
import vectorsModule from "../pkg-vectors/r2seal_wasm_bg.wasm";

/** Runs a vector check: {ok: true}, or the core's "<CODE>\u001f<message>" error split. */
function vectorCheck(check, file) {
  initVectors({ module: vectorsModule });
  try {
    check(file);
    return { ok: true };
  } catch (e) {
    const [code, error] = String(e).split("\u001f");
    return { ok: false, code, error };
  }
}

const MiB = 1024 * 1024;

class Fail extends Error {}
function assert(cond, message) {
  if (!cond) throw new Fail(message);
}
function eq(a, b, message) {
  if (a !== b) throw new Fail(`${message}: expected ${JSON.stringify(b)}, got ${JSON.stringify(a)}`);
}
async function rejects(promiseOrFn, Class, code, message) {
  try {
    await (typeof promiseOrFn === "function" ? promiseOrFn() : promiseOrFn);
  } catch (e) {
    assert(e instanceof Class, `${message}: expected ${Class.name}, got ${e?.constructor?.name}: ${e?.message}`);
    assert(e instanceof SealError, `${message}: not a SealError`);
    eq(e.code, code, `${message}: code`);
    return e;
  }
  throw new Fail(`${message}: did not fail`);
}

function bytes(n, seed = 1) {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

async function sha256(data) {
  return hex(await crypto.subtle.digest("SHA-256", data));
}
function hex(buf) {
  return [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");
}
function same(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A stream of `total` pseudo-random bytes made on the fly (bounded memory), hashed as it goes. */
function generated(total, piece = 256 * 1024) {
  const digest = new crypto.DigestStream("SHA-256");
  const writer = digest.getWriter();
  let sent = 0;
  let seed = 7;
  const stream = new ReadableStream({
    async pull(controller) {
      if (sent >= total) {
        await writer.close();
        controller.close();
        return;
      }
      const n = Math.min(piece, total - sent);
      const chunk = bytes(n, seed++);
      sent += n;
      await writer.write(chunk);
      controller.enqueue(chunk);
    },
  });
  return { stream, digest: digest.digest.then(hex) };
}

async function hashStream(stream) {
  const digest = new crypto.DigestStream("SHA-256");
  let n = 0;
  const counter = new TransformStream({
    transform(chunk, c) {
      n += chunk.length;
      c.enqueue(chunk);
    },
  });
  await stream.pipeThrough(counter).pipeTo(digest);
  return { sha: hex(await digest.digest), length: n };
}

function sealed(env, options = {}) {
  return SealedBucket.fromEnv(env.BUCKET, env, options);
}

/**
 * The R2 binding behind a Proxy: counts calls per method, and lets a test run `before`
 * hooks (e.g. a concurrent writer) around them. What the wrapper sees is the real binding.
 */
function instrumented(bucket, hooks = {}) {
  const calls = {};
  const proxy = new Proxy(bucket, {
    get(target, prop) {
      const v = target[prop];
      if (typeof v !== "function") return v;
      return async (...args) => {
        calls[prop] = (calls[prop] ?? 0) + 1;
        if (hooks[prop]) return hooks[prop]((...a) => v.apply(target, a), ...args);
        return v.apply(target, args);
      };
    },
  });
  return { bucket: proxy, calls };
}

const tests = {
  async roundtrip_empty(env) {
    const b = sealed(env);
    const put = await b.put("t/empty", "");
    eq(put.size, 0, "put size");
    eq(put.storedSize, 32, "stored size of an empty payload");
    const got = await b.get("t/empty");
    eq((await got.bytes()).length, 0, "empty round trip");
    eq(got.size, 0, "get size");
    const raw = await env.BUCKET.head("t/empty");
    eq(raw.size, sealedLength(0), "stored size is sealedLength(0)");
    return {};
  },

  async roundtrip_json(env) {
    const b = sealed(env);
    const value = { role: "user", text: "hello 🌍", n: [1, 2, 3] };
    await b.putJson("t/json", value, {
      customMetadata: { session: "s-42" },
      httpMetadata: { cacheControl: "no-store", contentLanguage: "en", contentEncoding: "identity", contentDisposition: "inline" },
    });
    const back = await b.getJson("t/json");
    eq(JSON.stringify(back), JSON.stringify(value), "json round trip");
    const got = await b.get("t/json");
    eq(got.customMetadata.session, "s-42", "sealed customMetadata comes back");
    eq(got.httpMetadata.contentType, "application/json", "contentType");
    eq(got.httpMetadata.contentLanguage, "en", "contentLanguage (sealed)");
    eq(got.httpMetadata.contentEncoding, "identity", "contentEncoding (sealed)");
    eq(got.sealed, true, "sealed");
    const text = JSON.stringify(value);
    eq(got.md5, hex(await crypto.subtle.digest("MD5", new TextEncoder().encode(text))), "md5 sealed");
    await got.text();
    // What the bucket holds: only the header in customMetadata; readable contentType and
    // cacheControl; no contentEncoding/language/disposition; no plaintext anywhere.
    const raw = await env.BUCKET.get("t/json");
    eq(Object.keys(raw.customMetadata).join(","), "r2seal", "stored customMetadata keys");
    assert(raw.customMetadata.r2seal.startsWith("age-encryption.org/v1;"), "metadata-form header");
    assert(raw.customMetadata.r2seal.includes("-> r2seal-name;"), "name-bound");
    assert(raw.customMetadata.r2seal.includes("-> r2seal-meta "), "sealed metadata stanza");
    assert(!raw.customMetadata.r2seal.includes("s-42"), "user metadata not in clear");
    eq(raw.httpMetadata.contentType, "application/json", "stored contentType");
    eq(raw.httpMetadata.cacheControl, "no-store", "stored cacheControl");
    eq(raw.httpMetadata.contentEncoding, undefined, "no contentEncoding on ciphertext");
    eq(raw.httpMetadata.contentLanguage, undefined, "contentLanguage not in clear");
    const body = new Uint8Array(await raw.arrayBuffer());
    eq(body.length, sealedLength(new TextEncoder().encode(text).length), "stored length");
    assert(!new TextDecoder().decode(body).includes("hello"), "no plaintext in the body");
    eq(plaintextLength(body.length), new TextEncoder().encode(text).length, "plaintextLength of stored size");
    return { header: raw.customMetadata.r2seal.length };
  },

  async roundtrip_multichunk(env) {
    const b = sealed(env);
    const data = bytes(3 * 65536 + 123, 3);
    const want = await sha256(data);
    await b.put("t/bytes", data);
    eq(await sha256(await (await b.get("t/bytes")).bytes()), want, "bytes value");
    // Stream with a declared size: FixedLengthStream, sealed length known up front.
    const s1 = new Blob([data]).stream();
    const p1 = await b.put("t/stream-sized", s1, { size: data.length });
    eq(p1.storedSize, sealedLength(data.length), "declared stored size");
    const g1 = await b.get("t/stream-sized");
    eq((await hashStream(g1.body)).sha, want, "sized stream round trip");
    // Stream without a size: buffered up to one part, then one put.
    await b.put("t/stream-unsized", new Blob([data]).stream());
    eq(await sha256(await (await b.get("t/stream-unsized")).bytes()), want, "unsized stream round trip");
    // Odd slicing on the way in.
    let at = 0;
    const odd = new ReadableStream({
      pull(c) {
        if (at >= data.length) return c.close();
        const n = Math.min(1 + ((at * 7919) % 70000), data.length - at);
        c.enqueue(data.slice(at, at + n));
        at += n;
      },
    });
    await b.put("t/stream-odd", odd, { size: data.length });
    eq(await sha256(await (await b.get("t/stream-odd")).bytes()), want, "odd slices");
    // A multiple of 64 KiB ends with a full final chunk.
    const full = bytes(2 * 65536, 9);
    await b.put("t/full", full);
    assert(same(await (await b.get("t/full")).bytes(), full), "full-chunk multiple");
    return {};
  },

  async multipart(env) {
    const b = sealed(env, { partSize: 5 * MiB });
    // Unsized stream beyond one part: multipart, equal 5 MiB parts over one payload.
    const total = 12 * MiB + 12345;
    const { stream, digest } = generated(total);
    const put = await b.put("t/multipart", stream);
    const want = await digest;
    eq(put.storedSize, sealedLength(total), "stored size");
    eq(put.size, total, "plaintext size");
    const got = await b.get("t/multipart");
    const h = await hashStream(got.body);
    eq(h.length, total, "length");
    eq(h.sha, want, "multipart round trip");
    // In-memory value beyond one part, and a sized stream beyond one part.
    const data = bytes(5 * MiB + 7, 5);
    await b.put("t/multipart-bytes", data);
    eq(await sha256(await (await b.get("t/multipart-bytes")).bytes()), await sha256(data), "bytes multipart");
    await b.put("t/multipart-sized", new Blob([data]).stream(), { size: data.length });
    eq(await sha256(await (await b.get("t/multipart-sized")).bytes()), await sha256(data), "sized multipart");
    // A range across the part boundary (stored offset 5 MiB).
    const r = await b.get("t/multipart-bytes", { range: { offset: 5 * MiB - 100, length: 200 } });
    assert(same(await r.bytes(), data.slice(5 * MiB - 100, 5 * MiB + 100)), "range across parts");
    // onlyIf cannot be honoured by a multipart upload: a stream of unknown size beyond one
    // part is refused, nothing written (sized and in-memory values: conditional_big_put).
    await rejects(b.put("t/multipart-cond", new Blob([bytes(6 * MiB)]).stream(), { onlyIf: { etagDoesNotMatch: "*" } }), SealError, "PRECONDITION_UNSUPPORTED", "onlyIf+multipart");
    eq(await env.BUCKET.head("t/multipart-cond"), null, "nothing written");
    return { parts: Math.ceil(sealedLength(total) / (5 * MiB)) };
  },

  async ranges(env) {
    const b = sealed(env);
    const data = bytes(2 * MiB + 4321, 11);
    await b.put("t/range", data);
    const cases = [
      [{ offset: 0, length: 1 }, 0, 1],
      [{ offset: 65535, length: 2 }, 65535, 65537],
      [{ offset: 100000 }, 100000, data.length],
      [{ suffix: 10 }, data.length - 10, data.length],
      [{ offset: 5, length: 1500000 }, 5, 1500005],
      [{ offset: data.length - 1, length: 1000 }, data.length - 1, data.length],
    ];
    for (const [range, from, to] of cases) {
      const got = await b.get("t/range", { range });
      eq(got.range.offset, from, `range ${JSON.stringify(range)} offset`);
      eq(got.range.length, to - from, `range ${JSON.stringify(range)} length`);
      assert(same(await got.bytes(), data.slice(from, to)), `range ${JSON.stringify(range)} bytes`);
    }
    const h = new Headers({ range: "bytes=70000-70009" });
    assert(same(await (await b.get("t/range", { range: h })).bytes(), data.slice(70000, 70010)), "Range header");
    await rejects(b.get("t/range", { range: { offset: data.length } }), SealError, "RANGE_NOT_SATISFIABLE", "past the end");
    // onlyIf on a ranged read: a failing condition gives metadata without a body.
    const head = await b.head("t/range");
    const miss = await b.get("t/range", { range: { offset: 0, length: 5 }, onlyIf: { etagMatches: "nope" } });
    assert(miss !== null && !("body" in miss), "precondition failed: no body");
    const hit = await b.get("t/range", { range: { offset: 0, length: 5 }, onlyIf: { etagMatches: head.etag } });
    assert(same(await hit.bytes(), data.slice(0, 5)), "precondition met");
    // A range on a tampered chunk fails; elsewhere it still reads.
    const raw = new Uint8Array(await (await env.BUCKET.get("t/range")).arrayBuffer());
    const header = (await env.BUCKET.head("t/range")).customMetadata;
    raw[16 + 65552 + 10] ^= 1; // chunk 1
    await env.BUCKET.put("t/range", raw, { customMetadata: header });
    await rejects(b.get("t/range", { range: { offset: 65536, length: 10 } }), SealError, "CORRUPT", "tampered chunk in range");
    assert(same(await (await b.get("t/range", { range: { offset: 0, length: 10 } })).bytes(), data.slice(0, 10)), "untouched chunk");
    return {};
  },

  async list_head_delete(env) {
    const b = sealed(env);
    const sizes = [0, 5, 65536, 65537, 200000];
    for (const n of sizes) await b.put(`l/obj-${n}`, bytes(n, n + 1), { httpMetadata: { contentType: "application/octet-stream" } });
    await env.BUCKET.put("l/plain", "twelve bytes");
    const listed = await b.list({ prefix: "l/" });
    const byKey = Object.fromEntries(listed.objects.map((o) => [o.key, o]));
    for (const n of sizes) {
      const o = byKey[`l/obj-${n}`];
      eq(o.size, n, `listed plaintext size of ${n}`);
      eq(o.storedSize, sealedLength(n), `listed stored size of ${n}`);
      eq(o.sealed, true, "sealed");
      eq(o.httpMetadata.contentType, "application/octet-stream", "listed contentType");
    }
    eq(byKey["l/plain"].sealed, false, "plaintext object listed as such");
    eq(byKey["l/plain"].size, 12, "plaintext size");
    const head = await b.head("l/obj-65537");
    eq(head.size, 65537, "head size");
    eq(head.storedSize, sealedLength(65537), "head stored size");
    eq(await b.head("l/missing"), null, "head of a missing key");
    eq(await b.get("l/missing"), null, "get of a missing key");
    eq(await b.getJson("l/missing"), null, "getJson of a missing key");
    await b.delete(["l/obj-0", "l/obj-5"]);
    await b.delete("l/plain");
    const after = await b.list({ prefix: "l/" });
    eq(after.objects.length, 3, "after delete");
    return {};
  },

  async names(env) {
    const b = sealed({ ...env, R2SEAL_NAMES_KEY: env.R2SEAL_KEY });
    const keys = ["names-test/sessions/2026/a.jsonl", "names-test/sessions/2026/b.jsonl", "names-test/credentials.json"];
    for (const k of keys) await b.put(k, `body of ${k}`);
    for (const k of keys) {
      eq(await (await b.get(k)).text(), `body of ${k}`, "round trip");
      const stored = b.storedKey(k);
      assert(/^[a-z2-7/]+$/.test(stored), `stored key is base32: ${stored}`);
      eq(b.plainKey(stored), k, "plainKey inverts storedKey");
      assert((await env.BUCKET.head(stored)) !== null, "stored under the encrypted key");
      assert((await env.BUCKET.head(k)) === null, "nothing under the plaintext key");
      eq((await b.head(k)).key, k, "head reports the plaintext key");
    }
    const raw = await env.BUCKET.list();
    assert(!raw.objects.some((o) => o.key.includes("names-test") || o.key.includes("sessions/2026")), "no plaintext names stored");
    // Listings decrypt: at a segment boundary, with a delimiter, inside a segment.
    const all = await b.list({ prefix: "names-test/" });
    eq(all.objects.map((o) => o.key).sort().join(), [...keys].sort().join(), "listed plaintext keys");
    const top = await b.list({ prefix: "names-test/", delimiter: "/" });
    eq(top.delimitedPrefixes.join(), "names-test/sessions/", "delimited prefixes decrypt");
    eq(top.objects.map((o) => o.key).join(), "names-test/credentials.json", "objects at this level");
    const partial = await b.list({ prefix: "names-test/sessions/2026/a" });
    eq(partial.objects.map((o) => o.key).join(), "names-test/sessions/2026/a.jsonl", "partial last segment");
    // Plaintext leftovers are reported, not a crash.
    await env.BUCKET.put("names-leftover.txt", "plain");
    const root = await b.list();
    assert(root.undecryptable.includes("names-leftover.txt"), "leftover reported");
    await rejects(b.list({ delimiter: "-" }), InvalidArgumentError, "INVALID_ARGUMENT", "only / delimits encrypted names");
    // A range read and a delete go to the stored key.
    const data = bytes(3 * 65536, 11);
    await b.put("names-test/big.bin", data);
    const r = await b.get("names-test/big.bin", { range: { offset: 70000, length: 100 } });
    assert(same(await r.bytes(), data.slice(70000, 70100)), "ranged read");
    await b.delete("names-test/big.bin");
    eq(await b.head("names-test/big.bin"), null, "deleted");
    // Too long for R2: refused before anything is written; reserved prefix refused.
    await rejects(b.put(`d/${"x".repeat(700)}`, "x"), InvalidArgumentError, "NAME_TOO_LONG", "name too long");
    await rejects(b.put(".r2seal/x", "x"), InvalidArgumentError, "INVALID_ARGUMENT", "reserved prefix");
    // Another name key finds nothing; the binding still names the plaintext key.
    const other = sealed({ ...env, R2SEAL_NAMES_KEY: env.OTHER_KEY });
    eq(await other.head(keys[0]), null, "another name key: another stored key");
    await env.BUCKET.put(b.storedKey("names-test/moved"), (await env.BUCKET.get(b.storedKey(keys[0]))).body, {
      customMetadata: (await env.BUCKET.head(b.storedKey(keys[0]))).customMetadata,
    });
    await rejects(b.get("names-test/moved"), IntegrityError, "WRONG_NAME", "a stored object moved under another name");
    for (const o of (await b.list()).objects) await b.delete(o.key);
    await env.BUCKET.delete("names-leftover.txt");
    return {};
  },

  async descriptor(env) {
    const named = () => sealed({ ...env, R2SEAL_NAMES_KEY: env.R2SEAL_KEY });
    try {
      const b = named();
      const text = new TextDecoder().decode(await b.writeDescriptor());
      assert(text.startsWith("r2seal-descriptor/v1\n"), "descriptor format");
      assert(text.includes(`"names":"${b.keys.names.keyId}"`), "records the name key id");
      await rejects(named().writeDescriptor(), DescriptorError, "DESCRIPTOR_INVALID", "no silent replace");
      await named().writeDescriptor({ replace: true });
      await b.put("desc/ok", "fine");
      await named().put("desc/ok2", "fine too");
      eq((await named().list()).objects.some((o) => o.key.startsWith(".r2seal")), false, "descriptor hidden");
      // Misconfigured writers are refused: no name key, other recipients.
      const e = await rejects(sealed(env).put("desc/bad", "x"), DescriptorError, "DESCRIPTOR_MISMATCH", "no name key");
      assert(e.message.includes("no name key"), e.message);
      const fewer = new SealedBucket(env.BUCKET, SealKeys.fromConfig({ identities: { main: env.R2SEAL_KEY }, names: env.R2SEAL_KEY }));
      const e2 = await rejects(fewer.put("desc/bad", "x"), DescriptorError, "DESCRIPTOR_MISMATCH", "other recipients");
      assert(e2.message.includes("default recipients differ"), e2.message);
      eq(await env.BUCKET.head("desc/bad"), null, "nothing written");
      // A forged configuration under the Worker key's MAC: refused, nothing adopted.
      const forged = text.replace(`"names":"${b.keys.names.keyId}"`, '"names":null');
      await env.BUCKET.put(".r2seal/descriptor", forged);
      await rejects(named().put("desc/x", "x"), DescriptorError, "DESCRIPTOR_INVALID", "forged MAC");
      await rejects(sealed(env).put("desc/x", "x"), DescriptorError, "DESCRIPTOR_INVALID", "forged MAC, any writer holding the key");
      await env.BUCKET.put(".r2seal/descriptor", "garbage");
      await rejects(named().put("desc/x", "x"), DescriptorError, "DESCRIPTOR_INVALID", "garbage");
      // Without a descriptor, nothing is compared.
      await env.BUCKET.delete(".r2seal/descriptor");
      await sealed(env).put("desc/plain-named", "x");
      return { descriptorBytes: text.length };
    } finally {
      await env.BUCKET.delete(".r2seal/descriptor");
      for (const o of (await named().list()).objects) await named().delete(o.key);
      await env.BUCKET.delete("desc/plain-named");
    }
  },

  // Run by the node side after it stored the descriptor the native CLI wrote.
  async descriptor_from_cli(env) {
    const b = sealed({ ...env, R2SEAL_NAMES_KEY: env.R2SEAL_KEY });
    await b.put("cli-desc/ok", "same configuration as the keyring");
    await b.delete("cli-desc/ok");
    await rejects(sealed(env).put("cli-desc/bad", "x"), DescriptorError, "DESCRIPTOR_MISMATCH", "without the name key");
    const noPolicy = sealed({ ...env, R2SEAL_NAMES_KEY: env.R2SEAL_KEY, R2SEAL_POLICIES: "{}" });
    const e = await rejects(noPolicy.put("cli-desc/bad", "x"), DescriptorError, "DESCRIPTOR_MISMATCH", "without the archive/ policy");
    assert(e.message.includes("archive/"), e.message);
    eq(await env.BUCKET.head(b.storedKey("cli-desc/bad")), null, "nothing written");
    return {};
  },

  async policies(env) {
    const b = sealed(env);
    const main = b.keys.recipientsFor("sessions/1");
    eq(main.length, 2, "default: sealed to the Worker key and the recovery recipient");
    assert(main.some((r) => r.startsWith("sym:")) && main.some((r) => r.startsWith("age1")), "both kinds");
    const archive = b.keys.recipientsFor("archive/2026/x");
    eq(archive.length, 1, "archive/: one recipient");
    assert(archive[0].startsWith("age1"), "archive/: only the write-only recipient");
    eq(b.keys.recipientsFor("archive-old/x").length, 2, "plain string prefixes");
    await b.putJson("archive/2026/x", { secret: "for the recovery key only" });
    const raw = await env.BUCKET.head("archive/2026/x");
    assert(!raw.customMetadata.r2seal.includes("r2seal-sym"), "no symmetric stanza under archive/");
    await rejects(b.get("archive/2026/x"), SealError, "NO_MATCHING_KEY", "the Worker cannot read archive/");
    await rejects(b.head("archive/2026/x"), SealError, "NO_MATCHING_KEY", "nor head it");
    // Longest prefix wins: archive/open/ is sealed to main again.
    const nested = SealKeys.fromConfig({
      identities: { main: env.R2SEAL_KEY },
      recipients: { recovery: env.R2SEAL_RECIPIENT_RECOVERY },
      policies: { "archive/": ["recovery"], "archive/open/": ["main"] },
    });
    eq(nested.recipientsFor("archive/open/x").join(), nested.recipientsFor("zzz").filter((r) => r.startsWith("sym:")).join(), "longest prefix");
    const nb = new SealedBucket(env.BUCKET, nested);
    await nb.put("archive/open/x", "readable");
    eq(await (await nb.get("archive/open/x")).text(), "readable", "nested policy readable");
    return {};
  },

  async allow_plaintext(env) {
    await env.BUCKET.put("legacy/a.txt", "not migrated", { customMetadata: { owner: "me" } });
    const strict = sealed(env);
    await rejects(strict.get("legacy/a.txt"), SealError, "PLAINTEXT_OBJECT", "plaintext refused by default");
    await rejects(strict.head("legacy/a.txt"), SealError, "PLAINTEXT_OBJECT", "head too");
    await rejects(strict.get("legacy/a.txt", { range: { offset: 0, length: 3 } }), SealError, "PLAINTEXT_OBJECT", "ranged too");
    const lax = sealed({ ...env, R2SEAL_ALLOW_PLAINTEXT: "true" });
    const got = await lax.get("legacy/a.txt");
    eq(got.sealed, false, "marked unsealed");
    eq(await got.text(), "not migrated", "served as is");
    eq(got.customMetadata.owner, "me", "its metadata");
    eq(await (await lax.get("legacy/a.txt", { range: { offset: 4, length: 8 } })).text(), "migrated", "ranged plaintext");
    // Sealed objects still open normally in that mode.
    await lax.put("legacy/b.txt", "sealed one");
    eq(await (await lax.get("legacy/b.txt")).text(), "sealed one", "sealed still opens");
    return {};
  },

  async tampered(env) {
    const b = sealed(env);
    const data = bytes(3 * 65536 + 10, 21);
    await b.put("x/obj", data, { customMetadata: { a: "b" } });
    const raw = new Uint8Array(await (await env.BUCKET.get("x/obj")).arrayBuffer());
    const meta = (await env.BUCKET.head("x/obj")).customMetadata;
    const put = (key, body, customMetadata = meta) => env.BUCKET.put(key, body, { customMetadata });
    const readAll = async (key, bucket = b) => (await bucket.get(key)).bytes();

    // A flipped body byte: CORRUPT, and the stream releases nothing past good chunks.
    const flipped = raw.slice();
    flipped[16 + 2 * 65552 + 5] ^= 0x40;
    await put("x/flipped", flipped, { r2seal: meta.r2seal });
    // Copy under another key: the name binding catches it.
    await put("x/moved", raw);
    await rejects(readAll("x/moved"), SealError, "WRONG_NAME", "moved object");
    // Flipped byte, read under its own name.
    await put("x/obj", flipped);
    const got = await b.get("x/obj");
    const reader = got.body.getReader();
    let released = 0;
    let error;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        assert(same(value, data.slice(released, released + value.length)), "released bytes are authentic");
        released += value.length;
      }
    } catch (e) {
      error = e;
    }
    eq(error?.code, "CORRUPT", "tampered chunk");
    assert(released <= 2 * 65536, "nothing from the bad chunk on");
    // Truncated at a chunk boundary, mid chunk, and extended.
    await put("x/obj", raw.slice(0, 16 + 2 * 65552));
    await rejects(readAll("x/obj"), SealError, "CORRUPT", "truncated at a chunk boundary");
    await put("x/obj", raw.slice(0, 16 + 65552 + 5)); // a final piece shorter than a tag
    await rejects(b.get("x/obj"), SealError, "CORRUPT", "truncated to an impossible length (caught at get)");
    await put("x/obj", raw.slice(0, 16 + 65552 + 100));
    await rejects(readAll("x/obj"), SealError, "CORRUPT", "truncated mid chunk");
    const ext = new Uint8Array(raw.length + 17);
    ext.set(raw);
    await put("x/obj", ext);
    await rejects(readAll("x/obj"), SealError, "CORRUPT", "extended");
    // Header: a changed MAC character, a mangled value, an unknown version.
    const h = meta.r2seal;
    const mac = h.slice(0, -3) + (h.at(-3) === "A" ? "B" : "A") + h.slice(-2);
    await put("x/obj", raw, { r2seal: mac });
    await rejects(b.get("x/obj"), SealError, "CORRUPT", "header MAC");
    await put("x/obj", raw, { r2seal: "garbage" });
    // The object has the header key, so it was tampered with: never "not sealed".
    await rejects(b.get("x/obj"), IntegrityError, "MALFORMED", "not a header");
    await rejects(b.head("x/obj"), IntegrityError, "MALFORMED", "not a header (head)");
    await rejects(b.get("x/obj", { range: { offset: 0, length: 4 } }), IntegrityError, "MALFORMED", "not a header (range)");
    await rejects(sealed({ ...env, R2SEAL_ALLOW_PLAINTEXT: "true" }).get("x/obj"), IntegrityError, "MALFORMED", "not a header, plaintext allowed");
    await rejects(async () => openBytes(b.keys, "x/obj", "garbage", raw), IntegrityError, "MALFORMED", "openBytes: not a header");
    await put("x/obj", raw, { r2seal: h.replace("age-encryption.org/v1", "age-encryption.org/v2") });
    await rejects(b.get("x/obj"), SealError, "UNSUPPORTED_VERSION", "future version");
    await put("x/obj", raw, { r2seal: h.replace("-> r2seal-name;", "-> r2seal-name extra;") });
    await rejects(b.get("x/obj"), SealError, "MALFORMED", "malformed stanza");
    // Sealed with another key: the Worker holds none of its keys.
    const other = SealKeys.fromConfig({ identities: { other: env.OTHER_KEY } });
    const sealedElsewhere = sealBytes(other, "x/foreign", new TextEncoder().encode("hi"));
    await put("x/foreign", sealedElsewhere.body, { r2seal: sealedElsewhere.header });
    await rejects(b.get("x/foreign"), SealError, "NO_MATCHING_KEY", "wrong key");
    // A Worker with a different key reads nothing of ours.
    await put("x/obj", raw);
    const stranger = new SealedBucket(env.BUCKET, other);
    await rejects(stranger.get("x/obj"), SealError, "NO_MATCHING_KEY", "stranger");
    eq(await sha256(await readAll("x/obj")), await sha256(data), "restored object opens");
    return { releasedBeforeError: released };
  },

  async bad_input(env) {
    const b = sealed(env);
    // Header too large for R2's 8 KiB metadata budget: refused before writing.
    const big = { k: "v".repeat(9000) };
    await rejects(b.put("y/big", "x", { customMetadata: big }), SealError, "HEADER_TOO_LARGE", "header budget");
    eq(await env.BUCKET.head("y/big"), null, "nothing written");
    await rejects(b.put("y/r", "x", { customMetadata: { r2seal: "mine" } }), SealError, "INVALID_ARGUMENT", "reserved key");
    // A stream that is not its declared length: nothing stored.
    const short = new Blob([bytes(5)]).stream();
    await rejects(b.put("y/short", short, { size: 10 }), SealError, "LENGTH_MISMATCH", "short stream");
    eq(await env.BUCKET.head("y/short"), null, "nothing written (short)");
    const long = new Blob([bytes(50)]).stream();
    await rejects(b.put("y/long", long, { size: 10 }), SealError, "LENGTH_MISMATCH", "long stream");
    eq(await env.BUCKET.head("y/long"), null, "nothing written (long)");
    await rejects(async () => new SealedBucket(env.BUCKET, b.keys, { partSize: 1024 }), SealError, "INVALID_ARGUMENT", "part size below R2's minimum");
    return {};
  },

  async secrets(env) {
    await rejects(async () => SealedBucket.fromEnv(env.BUCKET, {}), KeyConfigError, "MISSING_KEY", "no key");
    await rejects(async () => SealedBucket.fromEnv(env.BUCKET, { R2SEAL_KEY: "  " }), KeyConfigError, "MISSING_KEY", "empty key");
    // A malformed key: a typed error naming the variable, never echoing the value.
    const almost = env.R2SEAL_KEY.slice(0, -1) + (env.R2SEAL_KEY.at(-1) === "Q" ? "P" : "Q");
    for (const bad of [almost, "R2SEAL-SYM-KEY-1NOTAKEY", "hunter2-secret-value", env.R2SEAL_RECIPIENT_RECOVERY]) {
      const e = await rejects(async () => SealedBucket.fromEnv(env.BUCKET, { R2SEAL_KEY: bad }), KeyConfigError, "INVALID_KEY", "malformed key");
      assert(e.message.startsWith("R2SEAL_KEY"), `names the variable: ${e.message}`);
      assert(!e.message.includes(bad) && !e.message.includes(bad.slice(16, 40)), "does not echo the secret");
    }
    const e2 = await rejects(
      async () => SealedBucket.fromEnv(env.BUCKET, { R2SEAL_KEY: env.R2SEAL_KEY, R2SEAL_RECIPIENT_RECOVERY: env.R2SEAL_KEY }),
      KeyConfigError,
      "INVALID_KEY",
      "a secret key given as a recipient",
    );
    assert(!e2.message.includes(env.R2SEAL_KEY.slice(16)), "recipient error does not echo");
    await rejects(async () => SealedBucket.fromEnv(env.BUCKET, { R2SEAL_KEY: env.R2SEAL_KEY, R2SEAL_RECIPIENT_X: "age1xyz" }), KeyConfigError, "INVALID_KEY", "bad recipient");
    await rejects(async () => SealedBucket.fromEnv(env.BUCKET, { R2SEAL_KEY: env.R2SEAL_KEY, R2SEAL_POLICIES: "{not json" }), KeyConfigError, "INVALID_CONFIG", "policies JSON");
    await rejects(async () => SealedBucket.fromEnv(env.BUCKET, { R2SEAL_KEY: env.R2SEAL_KEY, R2SEAL_POLICIES: '{"a/": ["nobody"]}' }), KeyConfigError, "INVALID_CONFIG", "policy names an unknown key");
    await rejects(async () => SealedBucket.fromEnv(env.BUCKET, { R2SEAL_KEY: env.R2SEAL_KEY, R2SEAL_DEFAULTS: "ghost" }), KeyConfigError, "INVALID_CONFIG", "defaults name an unknown key");
    await rejects(async () => SealedBucket.fromEnv(env.BUCKET, { R2SEAL_KEY: 42 }), KeyConfigError, "INVALID_KEY", "non-string secret");
    // Write-only Worker: seals, cannot open.
    const writeOnly = SealedBucket.fromEnv(env.BUCKET, { R2SEAL_RECIPIENT_RECOVERY: env.R2SEAL_RECIPIENT_RECOVERY });
    eq(writeOnly.keys.canOpen, false, "write-only");
    await writeOnly.put("wo/x", "drop box");
    await rejects(writeOnly.get("wo/x"), SealError, "NO_MATCHING_KEY", "write-only cannot read");
    return {};
  },

  async unfinished_upload(env) {
    // What the native library or gateway leaves if it dies between completing a parts
    // upload and installing its header: ciphertext marked r2seal-pending, no r2seal.
    const raw = bytes(200, 3);
    await env.BUCKET.put("p/pending.bin", raw, { customMetadata: { "r2seal-pending": "1" } });
    for (const [label, b] of [
      ["strict", sealed(env)],
      ["plaintext allowed", sealed({ ...env, R2SEAL_ALLOW_PLAINTEXT: "true" })],
    ]) {
      for (const [op, f] of [
        ["head", () => b.head("p/pending.bin")],
        ["get", () => b.get("p/pending.bin")],
        ["get onlyIf", () => b.get("p/pending.bin", { onlyIf: { etagMatches: "nope" } })],
        ["range", () => b.get("p/pending.bin", { range: { offset: 0, length: 8 } })],
        ["getJson", () => b.getJson("p/pending.bin")],
      ]) {
        const e = await rejects(f, IntegrityError, "UNFINISHED_UPLOAD", `${label} ${op}`);
        assert(e.message.includes("unfinished sealed upload"), `${label} ${op}: says what it is: ${e.message}`);
      }
      const entry = (await b.list({ prefix: "p/" })).objects.find((o) => o.key === "p/pending.bin");
      eq(entry.sealed, true, `${label}: listed as not plaintext`);
      eq(entry.unfinished, true, `${label}: listed as unfinished`);
      eq(entry.size, null, `${label}: no plaintext size`);
    }
    // Plaintext and sealed neighbours are not unfinished.
    await env.BUCKET.put("p/plain.txt", "plain");
    await sealed(env).put("p/sealed.txt", "sealed");
    const listed = Object.fromEntries((await sealed(env).list({ prefix: "p/" })).objects.map((o) => [o.key, o]));
    eq(listed["p/plain.txt"].unfinished, false, "plaintext: not unfinished");
    eq(listed["p/plain.txt"].sealed, false, "plaintext");
    eq(listed["p/sealed.txt"].unfinished, false, "sealed: not unfinished");
    await env.BUCKET.delete(["p/pending.bin", "p/plain.txt", "p/sealed.txt"]);
    return {};
  },

  async json_errors(env) {
    const b = sealed(env);
    const secret = "xoxb-1234-SECRET-TOKEN-value";
    await b.put("nj/token.txt", secret);
    for (const [label, f] of [
      ["getJson", () => b.getJson("nj/token.txt")],
      ["json()", async () => (await b.get("nj/token.txt")).json()],
      ["ranged json()", async () => (await b.get("nj/token.txt", { range: { offset: 0, length: 12 } })).json()],
    ]) {
      const e = await rejects(f, InvalidJsonError, "INVALID_JSON", label);
      for (const part of ["xoxb", "SECRET", "1234"]) assert(!e.message.includes(part), `${label}: no plaintext in the message: ${e.message}`);
      assert(!String(e.stack).includes("xoxb"), `${label}: nor in the stack`);
      eq(e.cause, undefined, `${label}: no cause carrying the parser's message`);
    }
    await env.BUCKET.put("nj/plain.txt", secret);
    await rejects(sealed({ ...env, R2SEAL_ALLOW_PLAINTEXT: "1" }).getJson("nj/plain.txt"), InvalidJsonError, "INVALID_JSON", "plaintext object");
    await b.putJson("nj/ok.json", { a: 1 });
    eq((await b.getJson("nj/ok.json")).a, 1, "valid JSON still parses");
    await env.BUCKET.delete(["nj/token.txt", "nj/plain.txt", "nj/ok.json"]);
    return {};
  },

  async names_list_paging(env) {
    const b = sealed({ ...env, R2SEAL_NAMES_KEY: env.R2SEAL_KEY }, { checkDescriptor: false });
    const keys = ["sa/a", "sa/b", "sa/c", "sa/d"];
    for (const k of keys) await b.put(k, k);
    // A plaintext startAfter against base32 stored keys would select an arbitrary page.
    const e = await rejects(b.list({ prefix: "sa/", startAfter: "sa/b" }), InvalidArgumentError, "INVALID_ARGUMENT", "startAfter with encrypted names");
    assert(e.message.includes("cursor"), e.message);
    // cursor pages through everything.
    const seen = [];
    let cursor;
    do {
      const page = await b.list({ prefix: "sa/", limit: 2, cursor });
      seen.push(...page.objects.map((o) => o.key));
      cursor = page.cursor;
    } while (cursor !== undefined);
    eq([...seen].sort().join(), keys.join(), "cursor paging lists every key once");
    // Without encrypted names startAfter is R2's own.
    const plain = sealed(env);
    for (const k of keys) await plain.put(`sp/${k}`, k);
    eq((await plain.list({ prefix: "sp/", startAfter: "sp/sa/b" })).objects.map((o) => o.key).join(), "sp/sa/c,sp/sa/d", "plain names: startAfter");
    await b.delete(keys);
    await plain.delete(keys.map((k) => `sp/${k}`));
    return {};
  },

  async range_race(env) {
    const b0 = sealed(env);
    const v1 = "0123456789".repeat(100);
    const v2 = "abcdefghij".repeat(100);
    const reset = () => b0.put("rr/obj", v1);
    // A writer replaces the object after the first HEAD: the read starts again and
    // returns the new version's bytes, never a body-less object.
    await reset();
    let swaps = 1;
    const once = instrumented(env.BUCKET, {
      async head(call, k) {
        const h = await call(k);
        if (swaps-- > 0) await b0.put("rr/obj", v2);
        return h;
      },
    });
    const got = await new SealedBucket(once.bucket, b0.keys).get("rr/obj", { range: { offset: 0, length: 5 } });
    assert(got !== null && "body" in got, "a body");
    eq(await got.text(), "abcde", "the version read after the fresh HEAD");
    // Replaced after every HEAD: a typed error after a few attempts.
    await reset();
    let flip = 0;
    const always = instrumented(env.BUCKET, {
      async head(call, k) {
        const h = await call(k);
        await b0.put("rr/obj", flip++ % 2 ? v1 : v2);
        return h;
      },
    });
    await rejects(new SealedBucket(always.bucket, b0.keys).get("rr/obj", { range: { offset: 0, length: 5 } }), ObjectChangedError, "OBJECT_CHANGED", "always changing");
    assert(always.calls.head <= 4, `bounded retries (${always.calls.head} HEADs)`);
    // Deleted after the HEAD: null, as for a missing object.
    await reset();
    let deleted = false;
    const deleting = instrumented(env.BUCKET, {
      async head(call, k) {
        const h = await call(k);
        if (!deleted) {
          deleted = true;
          await env.BUCKET.delete("rr/obj");
        }
        return h;
      },
    });
    eq(await new SealedBucket(deleting.bucket, b0.keys).get("rr/obj", { range: { offset: 0, length: 5 } }), null, "deleted meanwhile");
    // The caller's own condition: when it fails on an unchanged object, metadata only.
    await reset();
    const etag = (await b0.head("rr/obj")).etag;
    const miss = await b0.get("rr/obj", { range: { offset: 0, length: 5 }, onlyIf: { etagDoesNotMatch: etag } });
    assert(miss !== null && !("body" in miss), "own condition failed: no body");
    // ...and when the object changed meanwhile, the condition is judged on the new version.
    swaps = 1;
    const racedCond = await new SealedBucket(once.bucket, b0.keys).get("rr/obj", { range: { offset: 0, length: 5 }, onlyIf: { etagDoesNotMatch: etag } });
    assert(racedCond !== null && "body" in racedCond, "the new version meets the condition");
    eq(await racedCond.text(), "abcde", "new version");
    // A plaintext object sealed between HEAD and GET is never served as plaintext.
    await env.BUCKET.put("rr/plain", v1);
    let sealedMeanwhile = false;
    const sealing = instrumented(env.BUCKET, {
      async head(call, k) {
        const h = await call(k);
        if (!sealedMeanwhile) {
          sealedMeanwhile = true;
          await b0.put("rr/plain", v2);
        }
        return h;
      },
    });
    const lax = new SealedBucket(sealing.bucket, b0.keys, { allowPlaintext: true });
    const r = await lax.get("rr/plain", { range: { offset: 0, length: 5 } });
    eq(r.sealed, true, "read as the sealed version");
    eq(await r.text(), "abcde", "plaintext of the sealed version");
    await env.BUCKET.delete(["rr/obj", "rr/plain"]);
    return {};
  },

  async env_variables(env) {
    const base = { R2SEAL_KEY: env.R2SEAL_KEY };
    // Present but empty: an error (as for R2SEAL_KEY), never "names off".
    for (const v of ["", " "]) {
      const e = await rejects(async () => SealedBucket.fromEnv(env.BUCKET, { ...base, R2SEAL_NAMES_KEY: v }), KeyConfigError, "MISSING_KEY", `R2SEAL_NAMES_KEY=${JSON.stringify(v)}`);
      assert(e.message.includes("R2SEAL_NAMES_KEY"), e.message);
    }
    eq(await env.BUCKET.head("en/secret-name.txt"), null, "nothing written under a plaintext name");
    // Unknown or misspelt R2SEAL_* variables: refused, named, value not echoed.
    for (const variable of ["R2SEAL_NAME_KEY", "R2SEAL_POLICY", "R2SEAL_RECIPIENT_backup", "R2SEAL_KEY_backup", "R2SEAL_DEFAULT"]) {
      const e = await rejects(async () => SealedBucket.fromEnv(env.BUCKET, { ...base, [variable]: env.R2SEAL_KEY }), KeyConfigError, "INVALID_CONFIG", variable);
      assert(e.message.startsWith(variable), `names ${variable}: ${e.message}`);
      assert(!e.message.includes(env.R2SEAL_KEY.slice(16, 40)), "does not echo the value");
    }
    await rejects(async () => SealedBucket.fromEnv(env.BUCKET, { ...base, R2SEAL_ALLOW_PLAINTEXT: "yes" }), KeyConfigError, "INVALID_CONFIG", "R2SEAL_ALLOW_PLAINTEXT=yes");
    // What is legitimately there: the Worker's variables, the native CLI's, bindings.
    const ok = SealedBucket.fromEnv(env.BUCKET, {
      ...base,
      R2SEAL_KEY_BACKUP: env.OTHER_KEY,
      R2SEAL_RECIPIENT_RECOVERY: env.R2SEAL_RECIPIENT_RECOVERY,
      R2SEAL_NAMES_KEY: env.R2SEAL_KEY,
      R2SEAL_DEFAULTS: "main,recovery",
      R2SEAL_POLICIES: JSON.stringify({ "archive/": ["recovery"] }),
      R2SEAL_ALLOW_PLAINTEXT: "0",
      R2SEAL_KEYRING: "/home/agent/.config/r2seal/keyring.toml",
      R2SEAL_PASSPHRASE: "hunter2",
      R2SEAL_GATEWAY_ACCESS_KEY_ID: "agent",
      R2SEAL_BUCKET: env.BUCKET,
      OTHER_SETTING: "x",
    });
    eq(ok.allowPlaintext, false, "R2SEAL_ALLOW_PLAINTEXT=0");
    assert(ok.keys.names !== null, "names on");
    return {};
  },

  async metadata_local_limit(env) {
    // Miniflare (and so wrangler dev) allows 2,048 bytes of metadata, R2 8,192: the
    // wrapper's own budget passes, R2's refusal (10012) arrives typed.
    const b = sealed(env);
    const note = { note: "v".repeat(1500) };
    const e = await rejects(b.put("mb/small", "x", { customMetadata: note }), HeaderTooLargeError, "HEADER_TOO_LARGE", "single put");
    assert(e.message.includes("2,048"), e.message);
    eq(await env.BUCKET.head("mb/small"), null, "nothing written");
    // Within the local limit: written.
    await b.put("mb/fits", "x", { customMetadata: { note: "v".repeat(500) } });
    await b.delete("mb/fits");
    return {};
  },

  async descriptor_create_only(env) {
    await env.BUCKET.delete(".r2seal/descriptor");
    const first = sealed(env);
    const written = await first.writeDescriptor();
    // A second writer whose HEAD ran before the first put (simulated: its HEAD sees
    // nothing): its put must not replace the descriptor.
    const other = SealKeys.fromConfig({ identities: { main: env.OTHER_KEY } });
    const late = instrumented(env.BUCKET, {
      async head(call, k) {
        return k === ".r2seal/descriptor" ? null : call(k);
      },
    });
    const e = await rejects(new SealedBucket(late.bucket, other).writeDescriptor(), DescriptorError, "DESCRIPTOR_INVALID", "lost race");
    assert(e.message.includes("another writer"), e.message);
    const stored = new Uint8Array(await (await env.BUCKET.get(".r2seal/descriptor")).arrayBuffer());
    assert(same(stored, written), "the first descriptor stays");
    // Both racing for real: exactly one wins.
    await env.BUCKET.delete(".r2seal/descriptor");
    const results = await Promise.allSettled([sealed(env).writeDescriptor(), new SealedBucket(env.BUCKET, other).writeDescriptor()]);
    eq(results.filter((r) => r.status === "fulfilled").length, 1, `one writer wins: ${results.map((r) => r.status).join()}`);
    await env.BUCKET.delete(".r2seal/descriptor");
    return {};
  },

  async body_not_consumed(env) {
    const b = sealed(env);
    await b.put("bg/obj", "hello");
    for (const [label, touch] of [
      ["spread", (o) => ({ ...o })],
      ["JSON.stringify", (o) => JSON.stringify(o)],
      ["Object.keys", (o) => Object.keys(o)],
      ["read .body", (o) => o.body],
    ]) {
      const o = await b.get("bg/obj");
      const t = touch(o);
      eq(o.bodyUsed, false, `${label}: not used`);
      if (label === "spread") eq("body" in t, false, "spread: no body copied");
      if (label === "JSON.stringify") assert(!t.includes("ReadableStream") && !t.includes('"body"'), t);
      eq(await o.text(), "hello", `${label}: text() still works`);
      eq(o.bodyUsed, true, `${label}: used after text()`);
      await rejects(o.text(), InvalidArgumentError, "INVALID_STATE", `${label}: read twice`);
    }
    const o = await b.get("bg/obj");
    assert("body" in o, "`in` still finds the body (the precondition check callers use)");
    const reader = o.body.getReader();
    eq(o.bodyUsed, true, "a reader holds the body: used");
    await rejects(o.text(), InvalidArgumentError, "INVALID_STATE", "text() while a reader holds it");
    eq(new TextDecoder().decode((await reader.read()).value), "hello", "the reader reads");
    await b.delete("bg/obj");
    return {};
  },

  async getjson_precondition(env) {
    const b = sealed(env);
    await b.putJson("gj/a", { a: 1 });
    const etag = (await b.head("gj/a")).etag;
    const e = await rejects(b.getJson("gj/a", { onlyIf: { etagDoesNotMatch: etag } }), PreconditionFailedError, "PRECONDITION_FAILED", "not modified");
    eq(e.object.etag, etag, "the error carries the object's metadata");
    eq(e.object.key, "gj/a", "its plaintext key");
    await rejects(b.getJson("gj/a", { onlyIf: { etagMatches: "nope" } }), PreconditionFailedError, "PRECONDITION_FAILED", "etagMatches fails");
    eq(await b.getJson("gj/missing", { onlyIf: { etagDoesNotMatch: etag } }), null, "missing: null");
    eq((await b.getJson("gj/a", { onlyIf: { etagMatches: etag } })).a, 1, "condition met: the value");
    await b.delete("gj/a");
    return {};
  },

  async reserved_delete(env) {
    const b = sealed(env);
    await b.writeDescriptor({ replace: true });
    await b.put("rd/x", "x");
    await rejects(b.delete(".r2seal/descriptor"), InvalidArgumentError, "INVALID_ARGUMENT", "delete of the descriptor");
    await rejects(b.delete(["rd/x", ".r2seal/descriptor"]), InvalidArgumentError, "INVALID_ARGUMENT", "in a batch");
    assert((await env.BUCKET.head(".r2seal/descriptor")) !== null, "descriptor left");
    assert((await b.head("rd/x")) !== null, "a refused batch deletes nothing");
    await b.delete("rd/x");
    await env.BUCKET.delete(".r2seal/descriptor");
    return {};
  },

  async conditional_big_put(env) {
    const { bucket, calls } = instrumented(env.BUCKET);
    const b = new SealedBucket(bucket, sealed(env).keys, { partSize: 5 * MiB });
    const data = bytes(6 * MiB + 3, 13);
    // In memory, beyond one part, with onlyIf: one conditional put.
    const put = await b.put("cb/bytes", data, { onlyIf: { etagDoesNotMatch: "*" } });
    assert(put !== null, "written");
    eq(calls.createMultipartUpload, undefined, "no multipart upload");
    eq(await b.put("cb/bytes", data, { onlyIf: { etagDoesNotMatch: "*" } }), null, "second create-only put: condition fails");
    assert(same(await (await b.get("cb/bytes")).bytes(), data), "round trip");
    // A sized stream: the same.
    const s = await b.put("cb/stream", new Blob([data]).stream(), { size: data.length, onlyIf: { etagDoesNotMatch: "*" } });
    assert(s !== null, "sized stream written");
    eq(calls.createMultipartUpload, undefined, "no multipart upload (stream)");
    assert(same(await (await b.get("cb/stream")).bytes(), data), "stream round trip");
    // Without onlyIf the same value still goes multipart.
    await b.put("cb/plain", data);
    eq(calls.createMultipartUpload, 1, "unconditional: multipart");
    await b.delete(["cb/bytes", "cb/stream", "cb/plain"]);
    return {};
  },

  async range_arguments(env) {
    const b = sealed(env);
    await b.put("ri/obj", "0123456789");
    for (const range of [{ offset: 1.5, length: 2 }, { offset: 1, length: 2.5 }, { suffix: 0.5 }, { offset: -1 }, { offset: "1" }]) {
      await rejects(b.get("ri/obj", { range }), InvalidArgumentError, "INVALID_ARGUMENT", `range ${JSON.stringify(range)}`);
    }
    await rejects(b.get("ri/obj", { range: { offset: 10 } }), SealError, "RANGE_NOT_SATISFIABLE", "past the end is still 416");
    eq(await (await b.get("ri/obj", { range: { offset: 2, length: 3 } })).text(), "234", "integers work");
    await b.delete("ri/obj");
    return {};
  },


  async range_calls(env) {
    // A long range of a single-stream object: one streamed GET (plus the HEAD, and the
    // salt's own GET when the range starts far from it), not one GET per MiB.
    const b0 = sealed(env);
    const data = bytes(6 * MiB + 777, 17);
    await b0.put("rc/obj", data);
    const cases = [
      [{ offset: 1 }, 1, data.length, 1],
      [{ offset: 3 * MiB + 5 }, 3 * MiB + 5, data.length, 2],
      [{ suffix: 2 * MiB }, data.length - 2 * MiB, data.length, 2],
      [{ offset: 100, length: 5 * MiB }, 100, 100 + 5 * MiB, 1],
      [{ offset: 65536 * 3 - 3, length: 10 }, 65536 * 3 - 3, 65536 * 3 + 7, 2],
    ];
    const counts = {};
    for (const [range, from, to, gets] of cases) {
      const { bucket, calls } = instrumented(env.BUCKET);
      const got = await new SealedBucket(bucket, b0.keys).get("rc/obj", { range });
      assert(same(await got.bytes(), data.slice(from, to)), `range ${JSON.stringify(range)} bytes`);
      eq(calls.head, 1, `range ${JSON.stringify(range)}: one HEAD`);
      eq(calls.get, gets, `range ${JSON.stringify(range)}: GETs`);
      counts[JSON.stringify(range)] = calls.get;
    }
    // Cancelling a streamed range midway releases it; a later read still works.
    const partial = await b0.get("rc/obj", { range: { offset: 0 } });
    const reader = partial.body.getReader();
    await reader.read();
    await reader.read();
    await reader.cancel();
    assert(same(await (await b0.get("rc/obj", { range: { offset: 5, length: 5 } })).bytes(), data.slice(5, 10)), "after a cancel");
    // Tampering in the middle of a streamed range: the stream errors there.
    const raw = new Uint8Array(await (await env.BUCKET.get("rc/obj")).arrayBuffer());
    const meta = (await env.BUCKET.head("rc/obj")).customMetadata;
    raw[16 + 40 * 65552 + 9] ^= 1;
    await env.BUCKET.put("rc/obj", raw, { customMetadata: meta });
    const tampered = await b0.get("rc/obj", { range: { offset: 1 } });
    await rejects(tampered.bytes(), IntegrityError, "CORRUPT", "tampered chunk in a streamed range");
    await b0.delete("rc/obj");
    return { gets: counts };
  },

  async bench(env, url) {
    const n = Number(url.searchParams.get("n") ?? "200");
    // Default: the Worker key plus the X25519 recovery recipient (one X25519 wrap per
    // seal); `symOnly`: the Worker key alone.
    const b = url.searchParams.has("symOnly")
      ? new SealedBucket(env.BUCKET, SealKeys.fromConfig({ identities: { main: env.R2SEAL_KEY } }))
      : sealed(env);
    const doc = { messages: [] };
    while (JSON.stringify(doc).length < 4096) doc.messages.push({ role: "assistant", text: "x".repeat(100), t: doc.messages.length });
    const plain = new TextEncoder().encode(JSON.stringify(doc).slice(0, 4096));
    for (let i = 0; i < n; i++) {
      const s = sealBytes(b.keys, "bench/doc.json", plain, { size: plain.length });
      const o = openBytes(b.keys, "bench/doc.json", s.header, s.body);
      if (o.plaintext.length !== plain.length) throw new Fail("bench round trip");
    }
    return { n, bytes: plain.length };
  },

  async bench_r2(env, url) {
    const n = Number(url.searchParams.get("n") ?? "50");
    const b = sealed(env);
    const doc = { text: "y".repeat(4080) };
    for (let i = 0; i < n; i++) {
      await b.putJson("bench/r2.json", doc);
      const back = await b.getJson("bench/r2.json");
      if (back.text.length !== 4080) throw new Fail("bench_r2 round trip");
    }
    return { n };
  },

  async big(env, url) {
    const mb = Number(url.searchParams.get("mb") ?? "50");
    const total = mb * MiB;
    const b = sealed(env, { partSize: 5 * MiB });
    const memBefore = wasmMemoryBytes();
    const { stream, digest } = generated(total);
    await b.put("big/object", stream, { size: total });
    const want = await digest;
    const memAfterPut = wasmMemoryBytes();
    const got = await b.get("big/object");
    const h = await hashStream(got.body);
    eq(h.length, total, "50 MiB length");
    eq(h.sha, want, "50 MiB round trip");
    const memAfterGet = wasmMemoryBytes();
    assert(memAfterGet < 16 * MiB, `wasm memory stays bounded (${memAfterGet} bytes)`);
    await b.delete("big/object");
    return { total, wasmMemoryBefore: memBefore, wasmMemoryAfterPut: memAfterPut, wasmMemoryAfterGet: memAfterGet };
  },
};

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    try {
      if (url.pathname.startsWith("/t/")) {
        const name = url.pathname.slice(3);
        const test = tests[name];
        if (!test) return Response.json({ ok: false, error: `no test ${name}` }, { status: 404 });
        const details = await test(env, url);
        return Response.json({ ok: true, ...details });
      }
      if (url.pathname === "/name-vector") {
        return Response.json(vectorCheck(checkNameVector, new Uint8Array(await request.arrayBuffer())));
      }
      if (url.pathname === "/vector") {
        return Response.json(vectorCheck(checkVector, new Uint8Array(await request.arrayBuffer())));
      }
      const key = url.searchParams.get("key");
      if (url.pathname === "/put") {
        await sealed(env).put(key, request.body, { size: Number(request.headers.get("content-length")) });
        return Response.json({ ok: true });
      }
      if (url.pathname === "/get") {
        const got = await sealed(env).get(key);
        return new Response(await got.bytes());
      }
      if (url.pathname === "/raw/export") {
        // The stored object (metadata form) as a file-form age file for the native CLI.
        const raw = await env.BUCKET.get(key);
        const body = new Uint8Array(await raw.arrayBuffer());
        return new Response(toFileForm(raw.customMetadata.r2seal, body));
      }
      if (url.pathname === "/raw/put") {
        await env.BUCKET.put(key, new Uint8Array(await request.arrayBuffer()));
        return Response.json({ ok: true });
      }
      if (url.pathname === "/raw/delete") {
        await env.BUCKET.delete(key);
        return Response.json({ ok: true });
      }
      if (url.pathname === "/raw/import") {
        // A file-form object from the native CLI, stored in the metadata form.
        const { header, body } = fromFileForm(new Uint8Array(await request.arrayBuffer()));
        await env.BUCKET.put(key, body, { customMetadata: { r2seal: header } });
        return Response.json({ ok: true });
      }
      return new Response("not found", { status: 404 });
    } catch (e) {
      return Response.json({ ok: false, error: `${e?.constructor?.name}: ${e?.code ?? ""} ${e?.message}`, stack: e?.stack }, { status: 500 });
    }
  },
};
