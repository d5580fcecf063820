/**
 * `SealedBucket`: an R2 binding whose objects are sealed before they leave the Worker.
 *
 * Object layout (shared with the native S3 layer):
 * - `customMetadata.r2seal` = the age header's metadata form; the body = the payload
 *   (16-byte nonce ‖ STREAM), so plaintext sizes are a pure function of stored sizes.
 * - The header is bound to the object key exactly as stored (`Binding.name`).
 * - Sealed inside the header: the caller's customMetadata, contentEncoding,
 *   contentDisposition, contentLanguage, the plaintext size and MD5 when known.
 *   contentType, cacheControl and cacheExpiry stay readable on the stored object.
 * - Values beyond one part go up as a multipart upload: equal-size parts over one
 *   single-stream payload, sliced at arbitrary byte offsets.
 * - An object without `customMetadata.r2seal` is plaintext: refused unless
 *   `allowPlaintext`. One carrying `r2seal-pending` instead is an unfinished sealed
 *   upload of the native library or gateway (ciphertext without its header): never
 *   plaintext, always an `IntegrityError` (`UNFINISHED_UPLOAD`).
 */
import {
  allowPlaintextFromEnv,
  checkDescriptor,
  descriptorFor,
  init,
  Opener,
  openerFor,
  Sealer,
  SealKeys,
  plaintextLength,
  sealedLength,
  type SealedMetadataInput,
  type SealedMetadataOutput,
} from "./core.js";
import {
  DescriptorError,
  HeaderTooLargeError,
  IntegrityError,
  InvalidArgumentError,
  InvalidJsonError,
  LengthMismatchError,
  ObjectChangedError,
  PlaintextObjectError,
  PreconditionFailedError,
  SealError,
  fromWasm,
  wasmCall,
} from "./errors.js";

/** The `customMetadata` key holding the header (metadata form). */
export const METADATA_KEY = "r2seal";
/** The marker of a parts upload whose header is not installed yet (native `PENDING_KEY`). */
const PENDING_KEY = "r2seal-pending";
/** R2's minimum size of every part but the last. */
export const MIN_PART_SIZE = 5 * 1024 * 1024;
/** Default part size, and the sealed size above which a value is uploaded in parts. */
export const DEFAULT_PART_SIZE = 8 * 1024 * 1024;
const MAX_PART_SIZE = 5 * 1024 * 1024 * 1024;
/**
 * R2's largest single upload (5 GiB less 5 MiB, stored bytes): a conditional put (`onlyIf`)
 * of a larger value is refused, since a multipart upload cannot be conditional.
 */
export const MAX_SINGLE_PUT = 5 * 1024 * 1024 * 1024 - 5 * 1024 * 1024;
/** r2seal's own objects (the bucket descriptor): hidden from listings, never written by `put`. */
export const RESERVED_PREFIX = ".r2seal/";
/** The bucket descriptor (SECURITY.md §3.11). */
export const DESCRIPTOR_KEY = ".r2seal/descriptor";
/** Plaintext bytes opened per ranged fetch when a range is streamed (16 chunks). */
const RANGE_WINDOW = 16 * 65536;
/** Fresh starts of a ranged read whose object changed between its HEAD and first GET. */
const RANGE_ATTEMPTS = 3;

export interface SealedBucketOptions {
  /** Serve objects that have no r2seal header (not migrated yet) as they are. */
  allowPlaintext?: boolean;
  /** Stored bytes per multipart part, ≥ 5 MiB; values sealed beyond it go multipart. */
  partSize?: number;
  /**
   * Compare the bucket descriptor (`.r2seal/descriptor`) with these keys before the
   * first write and refuse to write on a difference (default true).
   */
  checkDescriptor?: boolean;
}

export type SealedPutValue =
  | ReadableStream<Uint8Array>
  | ArrayBuffer
  | ArrayBufferView
  | string
  | null
  | Blob;

export interface SealedPutOptions {
  /** contentType, cacheControl, cacheExpiry stay readable; the rest is sealed. */
  httpMetadata?: R2HTTPMetadata | Headers;
  /** Sealed in the header; the key "r2seal" is reserved. */
  customMetadata?: Record<string, string>;
  /**
   * Conditions on the stored object (R2 semantics): `null` is returned if they fail.
   * A conditional value is always written in one put (R2's multipart uploads are
   * unconditional), so it may be up to `MAX_SINGLE_PUT` stored bytes, beyond `partSize`;
   * a `ReadableStream` beyond one part needs `size`.
   */
  onlyIf?: R2Conditional | Headers;
  /**
   * Plaintext length of a `ReadableStream` value, when known: the sealed length is then
   * declared up front (FixedLengthStream) and recorded in the sealed metadata. A stream
   * of another length fails with `LENGTH_MISMATCH` and nothing is stored.
   */
  size?: number;
}

/** What a sealed object looks like to the caller: plaintext sizes, unsealed metadata. */
export interface SealedObject {
  readonly key: string;
  readonly version: string;
  /** Plaintext size. */
  readonly size: number;
  /** Size of the stored ciphertext. */
  readonly storedSize: number;
  readonly etag: string;
  readonly httpEtag: string;
  readonly uploaded: Date;
  readonly httpMetadata: R2HTTPMetadata;
  readonly customMetadata: Record<string, string>;
  /** Plaintext MD5 (hex) recorded by the writer, when it knew it. */
  readonly md5?: string;
  /** Plaintext range served, for ranged reads. */
  readonly range?: { offset: number; length: number };
  /** False only for a plaintext object served under `allowPlaintext`. */
  readonly sealed: boolean;
  writeHttpMetadata(headers: Headers): void;
}

export interface SealedObjectBody extends SealedObject {
  /**
   * Plaintext. Errors (an `IntegrityError`) if the object proves truncated or tampered.
   * Not enumerable: spreading, logging or `JSON.stringify` of the object leave it unread.
   */
  readonly body: ReadableStream<Uint8Array>;
  /** True once the body is being read (locked) or was read by `text()`, `json()`, …. */
  readonly bodyUsed: boolean;
  arrayBuffer(): Promise<ArrayBuffer>;
  bytes(): Promise<Uint8Array>;
  text(): Promise<string>;
  json<T = unknown>(): Promise<T>;
}

export interface SealedListEntry {
  readonly key: string;
  /**
   * Plaintext size, computed from the stored size as for a single stream (not
   * authenticated; an object in the native parts layout shows a wrong figure until
   * `head`). Null if no single-stream object has this size, or for an unfinished upload.
   */
  readonly size: number | null;
  readonly storedSize: number;
  readonly etag: string;
  readonly uploaded: Date;
  /** False only for a plaintext object (no `r2seal` header, no `r2seal-pending` marker). */
  readonly sealed: boolean;
  /**
   * An unfinished sealed upload of the native library or gateway (`r2seal-pending`, no
   * `r2seal`): ciphertext without its header, unreadable (`UNFINISHED_UPLOAD`); upload it again.
   */
  readonly unfinished: boolean;
  /** The readable part: contentType, cacheControl, cacheExpiry. */
  readonly httpMetadata: R2HTTPMetadata;
}

export interface SealedObjects {
  objects: SealedListEntry[];
  truncated: boolean;
  cursor?: string;
  delimitedPrefixes: string[];
  /**
   * With encrypted names: stored keys (and prefixes) that do not decrypt under the name
   * key (plaintext leftovers of a migration, another key's names). Never opened.
   */
  undecryptable: string[];
}

export interface SealedGetOptions {
  onlyIf?: R2Conditional | Headers;
  /** A plaintext range. */
  range?: R2Range | Headers;
}

export class SealedBucket {
  readonly bucket: R2Bucket;
  readonly keys: SealKeys;
  readonly allowPlaintext: boolean;
  readonly partSize: number;
  readonly checkDescriptor: boolean;
  private descriptorChecked: Promise<void> | null = null;

  constructor(bucket: R2Bucket, keys: SealKeys, options: SealedBucketOptions = {}) {
    init();
    this.bucket = bucket;
    this.keys = keys;
    this.allowPlaintext = options.allowPlaintext ?? false;
    this.checkDescriptor = options.checkDescriptor ?? true;
    const partSize = options.partSize ?? DEFAULT_PART_SIZE;
    if (!Number.isInteger(partSize) || partSize < MIN_PART_SIZE || partSize > MAX_PART_SIZE) {
      throw new InvalidArgumentError("INVALID_ARGUMENT", "partSize must be an integer between 5 MiB and 5 GiB");
    }
    this.partSize = partSize;
  }

  /**
   * Keys from `env` (see `SealKeys.fromEnv`); `allowPlaintext` also from
   * `R2SEAL_ALLOW_PLAINTEXT` (true/1/false/0). `env` is any object: the Worker's `Env`,
   * an interface as `wrangler types` writes it, or a record.
   */
  static fromEnv(bucket: R2Bucket, env: object, options: SealedBucketOptions = {}): SealedBucket {
    const allowPlaintext = allowPlaintextFromEnv(env);
    return new SealedBucket(bucket, SealKeys.fromEnv(env), {
      ...options,
      allowPlaintext: options.allowPlaintext ?? allowPlaintext ?? false,
    });
  }

  /** The key an object has in the bucket: `key`, or its encrypted form (R2SEAL_NAMES_KEY). */
  storedKey(key: string): string {
    const names = this.keys.names;
    return names === null ? key : wasmCall(() => names.encrypt(key));
  }

  /** The plaintext key of a stored key (throws `IntegrityError` if it does not decrypt). */
  plainKey(stored: string): string {
    const names = this.keys.names;
    return names === null ? stored : wasmCall(() => names.decrypt(stored));
  }

  async head(key: string): Promise<SealedObject | null> {
    const stored = await this.bucket.head(this.storedKey(key));
    if (stored === null) return null;
    const header = stored.customMetadata?.[METADATA_KEY];
    if (header === undefined) return this.plaintextObject(stored, key);
    const opener = this.opener(header, key);
    try {
      return describe(stored, opener, key);
    } finally {
      opener.free();
    }
  }

  async get(key: string, options: SealedGetOptions & { onlyIf: R2Conditional | Headers }): Promise<SealedObjectBody | SealedObject | null>;
  async get(key: string, options?: SealedGetOptions): Promise<SealedObjectBody | null>;
  async get(key: string, options: SealedGetOptions = {}): Promise<SealedObjectBody | SealedObject | null> {
    if (options.range !== undefined) return this.getRange(key, options);
    const stored = await this.bucket.get(this.storedKey(key), options.onlyIf ? { onlyIf: options.onlyIf } : undefined);
    if (stored === null) return null;
    const header = stored.customMetadata?.[METADATA_KEY];
    if (header === undefined) {
      if (!("body" in stored)) return this.plaintextObject(stored, key);
      try {
        this.checkPlaintext(stored, key);
      } catch (e) {
        await stored.body.cancel();
        throw e;
      }
      return withBody(plainDescribe(stored, key), stored.body);
    }
    let opener: Opener;
    try {
      opener = this.opener(header, key);
    } catch (e) {
      if ("body" in stored) await stored.body.cancel();
      throw e;
    }
    let meta: SealedObject;
    try {
      meta = describe(stored, opener, key);
    } catch (e) {
      opener.free();
      if ("body" in stored) await stored.body.cancel();
      throw e;
    }
    if (!("body" in stored)) {
      opener.free();
      return meta; // a failed precondition: metadata only, as R2 returns it
    }
    return withBody(meta, stored.body.pipeThrough(openStream(opener)));
  }

  async put(key: string, value: SealedPutValue, options: SealedPutOptions = {}): Promise<SealedObject | null> {
    if (typeof key !== "string" || key === "") {
      throw new InvalidArgumentError("INVALID_ARGUMENT", "the object key must be a non-empty string");
    }
    if (key.startsWith(RESERVED_PREFIX)) {
      throw new InvalidArgumentError("INVALID_ARGUMENT", `${RESERVED_PREFIX} is reserved for r2seal's own objects`);
    }
    const skey = this.storedKey(key); // NAME_TOO_LONG before anything is written
    await this.ensureDescriptor();
    const custom = options.customMetadata ?? {};
    if (Object.prototype.hasOwnProperty.call(custom, METADATA_KEY)) {
      throw new InvalidArgumentError("INVALID_ARGUMENT", `customMetadata key "${METADATA_KEY}" is reserved for the sealed header`);
    }
    const { readable, sealed } = splitHttpMetadata(options.httpMetadata);
    const meta: SealedMetadataInput = { ...sealed, customMetadata: { ...custom } };

    let bytes: Uint8Array | null = null;
    let stream: ReadableStream<Uint8Array> | null = null;
    let size: number | undefined = options.size;
    if (value === null || value === undefined) bytes = new Uint8Array(0);
    else if (typeof value === "string") bytes = new TextEncoder().encode(value);
    else if (value instanceof ArrayBuffer) bytes = new Uint8Array(value);
    else if (ArrayBuffer.isView(value)) bytes = new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
    else if (value instanceof Blob) {
      if (value.size <= this.partSize) bytes = new Uint8Array(await value.arrayBuffer());
      else {
        stream = value.stream();
        size = value.size;
      }
    } else if (value instanceof ReadableStream) stream = value;
    else throw new InvalidArgumentError("INVALID_ARGUMENT", "unsupported value type");
    if (size !== undefined && (!Number.isSafeInteger(size) || size < 0)) {
      throw new InvalidArgumentError("INVALID_ARGUMENT", "size must be a non-negative integer");
    }
    if (bytes !== null && size !== undefined && size !== bytes.length) {
      throw new LengthMismatchError("LENGTH_MISMATCH", `size says ${size} bytes, the value has ${bytes.length}`);
    }

    if (bytes !== null) {
      meta.size = bytes.length;
      meta.md5 = hex(await crypto.subtle.digest("MD5", bytes));
    } else if (size !== undefined) {
      meta.size = size;
    }
    // The envelope is sealed (and its metadata budget checked) before any byte is written.
    const sealer = wasmCall(() => new Sealer(this.keys.keys, key, JSON.stringify(meta)));
    const stored: R2PutOptions = { httpMetadata: readable, customMetadata: { [METADATA_KEY]: sealer.header } };
    if (options.onlyIf !== undefined) stored.onlyIf = options.onlyIf;

    try {
      let result: R2Object | null;
      // A conditional value goes up in one put whatever its size: multipart cannot be conditional.
      const singleLimit = stored.onlyIf !== undefined ? MAX_SINGLE_PUT : this.partSize;
      if (bytes !== null) {
        const body = concat([...sealSlices(sealer, bytes), sealer.finish()]);
        result =
          body.length <= singleLimit
            ? await this.bucket.put(skey, body, stored)
            : await this.multipart(skey, stored, singleChunkStream(body));
      } else {
        const ciphertext = stream!.pipeThrough(sealStream(sealer, size));
        const storedLength = size === undefined ? undefined : sealedLength(size);
        if (storedLength !== undefined && storedLength <= singleLimit) {
          const fixed = new FixedLengthStream(storedLength);
          const pump = ciphertext.pipeTo(fixed.writable);
          [result] = await Promise.all([this.bucket.put(skey, fixed.readable, stored), pump]);
        } else {
          result = await this.multipartOrSingle(skey, stored, ciphertext);
        }
      }
      return result === null ? null : written(result, key, readable, meta);
    } catch (e) {
      throw fromR2(fromWasm(e));
    } finally {
      sealer.free();
    }
  }

  /** Deletes objects by plaintext key; `.r2seal/` (the descriptor) is refused, as in `put`. */
  async delete(keys: string | string[]): Promise<void> {
    const list = Array.isArray(keys) ? keys : [keys];
    for (const k of list) {
      if (typeof k === "string" && k.startsWith(RESERVED_PREFIX)) {
        throw new InvalidArgumentError("INVALID_ARGUMENT", `${RESERVED_PREFIX} is reserved for r2seal's own objects`);
      }
    }
    await this.bucket.delete(Array.isArray(keys) ? list.map((k) => this.storedKey(k)) : this.storedKey(keys));
  }

  /**
   * Write the bucket descriptor for these keys (as `r2seal bucket init` does from a
   * keyring): refuses to replace an existing one unless `replace` (then only the one it
   * read, by its etag). Create-only when none exists: a descriptor another writer puts
   * first wins and this call throws `DescriptorError`. Returns the bytes written.
   */
  async writeDescriptor(options: { replace?: boolean } = {}): Promise<Uint8Array> {
    const bytes = wasmCall(() => descriptorFor(this.keys.keys, this.keys.names?.keyId));
    const existing = await this.bucket.head(DESCRIPTOR_KEY);
    if (existing !== null && !options.replace) {
      throw new DescriptorError("DESCRIPTOR_INVALID", "a bucket descriptor exists already (replace it explicitly)");
    }
    const stored: R2PutOptions = { httpMetadata: { contentType: "text/plain; charset=utf-8" } };
    // Conditional either way, as the native `bucket init` (If-None-Match: *): of two
    // writers racing, one wins and the other learns it.
    stored.onlyIf = existing !== null ? { etagMatches: existing.etag } : { etagDoesNotMatch: "*" };
    const put = await this.bucket.put(DESCRIPTOR_KEY, bytes, stored);
    if (put === null) {
      throw new DescriptorError(
        "DESCRIPTOR_INVALID",
        existing === null
          ? "another writer created a bucket descriptor meanwhile: read it, and replace it explicitly if it is wrong"
          : "the bucket descriptor changed while it was written",
      );
    }
    this.descriptorChecked = Promise.resolve();
    return bytes;
  }

  /**
   * Before the first write: the bucket descriptor, if there is one, must authenticate
   * under any symmetric key held here and describe exactly what these keys write.
   * Nothing is taken from it (SECURITY.md §3.11). A success is remembered.
   */
  private ensureDescriptor(): Promise<void> {
    if (!this.checkDescriptor) return Promise.resolve();
    if (this.descriptorChecked === null) {
      this.descriptorChecked = (async () => {
        const got = await this.bucket.get(DESCRIPTOR_KEY);
        if (got === null) return;
        const bytes = new Uint8Array(await got.arrayBuffer());
        try {
          checkDescriptor(this.keys.keys, this.keys.names?.keyId, bytes);
        } catch (e) {
          const converted = fromWasm(e);
          if (!(converted instanceof SealError)) throw converted;
          const err = converted;
          throw new DescriptorError(
            err.code === "DESCRIPTOR_MISMATCH" ? "DESCRIPTOR_MISMATCH" : "DESCRIPTOR_INVALID",
            `refusing to write: ${err.code === "DESCRIPTOR_MISMATCH" ? "" : `the bucket descriptor (${DESCRIPTOR_KEY}) is unusable: `}${err.message}`,
          );
        }
      })();
      // Only a success is remembered: a refused or failed check runs again next time.
      this.descriptorChecked.catch(() => {
        this.descriptorChecked = null;
      });
    }
    return this.descriptorChecked;
  }

  /**
   * A listing with plaintext sizes (computed from stored sizes: no key needed). With
   * encrypted names, objects come in stored-key order, not plaintext order, so
   * `startAfter` (a plaintext key) is refused: page with `cursor`.
   */
  async list(options: R2ListOptions = {}): Promise<SealedObjects> {
    // With encrypted names: list the stored form of the prefix up to its last "/",
    // decrypt, keep what the plaintext prefix selects (SECURITY.md §3.10).
    const names = this.keys.names;
    const prefix = options.prefix ?? "";
    let storedPrefix = prefix;
    let partial = false;
    if (names !== null) {
      if (options.startAfter !== undefined) {
        // Stored keys sort by ciphertext: no stored key marks "after this plaintext key".
        throw new InvalidArgumentError(
          "INVALID_ARGUMENT",
          "startAfter cannot be used with encrypted names (listings come in stored-key order, not plaintext order): page with cursor",
        );
      }
      if (options.delimiter !== undefined && options.delimiter !== "/") {
        throw new InvalidArgumentError("INVALID_ARGUMENT", 'with encrypted names the only delimiter is "/"');
      }
      const [sp, kind] = names.listPrefix(prefix) as [string, string];
      storedPrefix = sp;
      partial = kind === "partial";
    }
    // `include` is in the binding, not in every version of its types.
    const listed = await this.bucket.list({ ...options, prefix: storedPrefix, include: ["httpMetadata", "customMetadata"] } as R2ListOptions);
    const undecryptable: string[] = [];
    const plain = (stored: string): string | null => {
      if (names === null) return stored;
      try {
        const p = names.decrypt(stored);
        return partial && !p.startsWith(prefix) ? null : p;
      } catch {
        undecryptable.push(stored);
        return null;
      }
    };
    const objects: SealedListEntry[] = [];
    for (const o of listed.objects) {
      if (o.key.startsWith(RESERVED_PREFIX)) continue;
      const key = plain(o.key);
      if (key === null) continue;
      const unfinished = o.customMetadata?.[METADATA_KEY] === undefined && o.customMetadata?.[PENDING_KEY] !== undefined;
      const sealed = o.customMetadata?.[METADATA_KEY] !== undefined || unfinished;
      let size: number | null = unfinished ? null : o.size;
      if (sealed && !unfinished) {
        try {
          size = plaintextSize(o.size);
        } catch {
          size = null;
        }
      }
      objects.push({
        key,
        size,
        storedSize: o.size,
        etag: o.etag,
        uploaded: o.uploaded,
        sealed,
        unfinished,
        httpMetadata: readableHttp(o.httpMetadata),
      });
    }
    const delimitedPrefixes: string[] = [];
    for (const p of listed.delimitedPrefixes) {
      if (p === RESERVED_PREFIX) continue;
      const key = plain(p);
      if (key !== null) delimitedPrefixes.push(key);
    }
    return {
      objects,
      truncated: listed.truncated,
      cursor: listed.truncated ? listed.cursor : undefined,
      delimitedPrefixes,
      undecryptable,
    };
  }

  /**
   * The object's value parsed as JSON, or `null` if there is no object. A failed `onlyIf`
   * throws `PreconditionFailedError` (its `object`: the metadata R2 returns then), so
   * "not modified" never reads as "missing". Not JSON: `InvalidJsonError`.
   */
  async getJson<T = unknown>(key: string, options: SealedGetOptions = {}): Promise<T | null> {
    const object = await this.get(key, options);
    if (object === null) return null;
    if (!("body" in object)) {
      throw new PreconditionFailedError("PRECONDITION_FAILED", `onlyIf failed for ${JSON.stringify(key)}`, object);
    }
    return object.json<T>();
  }

  async putJson(key: string, value: unknown, options: SealedPutOptions = {}): Promise<SealedObject | null> {
    const http = options.httpMetadata instanceof Headers ? headersToHttp(options.httpMetadata) : { ...options.httpMetadata };
    http.contentType ??= "application/json";
    return this.put(key, JSON.stringify(value), { ...options, httpMetadata: http });
  }

  // ---- internals ----

  private opener(header: string, key: string): Opener {
    return openerFor(this.keys, header, key);
  }

  /**
   * An object without an `r2seal` header may be served as plaintext only if it is not an
   * unfinished sealed upload (its bytes are ciphertext) and plaintext is allowed.
   */
  private checkPlaintext(stored: R2Object, key: string): void {
    if (stored.customMetadata?.[PENDING_KEY] !== undefined) throw unfinishedError(key);
    if (!this.allowPlaintext) throw plaintextError(key);
  }

  private plaintextObject(stored: R2Object, key: string): SealedObject {
    this.checkPlaintext(stored, key);
    return plainDescribe(stored, key);
  }

  /**
   * A plaintext range. The object is fetched in pieces, each pinned to the version the
   * HEAD saw; if it changes before the first piece, the read starts again from a fresh
   * HEAD (a few times, then `ObjectChangedError`). Metadata without a body is returned
   * only when the caller's own `onlyIf` failed.
   */
  private async getRange(key: string, options: SealedGetOptions): Promise<SealedObjectBody | SealedObject | null> {
    const skey = this.storedKey(key);
    const ownCondition = Object.keys(conditional(options.onlyIf)).length > 0;
    let head = await this.bucket.head(skey);
    for (let attempt = 1; ; attempt++) {
      if (head === null) return null;
      const got = await this.rangeOf(skey, key, head, options);
      if (got === null || !("failed" in got)) return got;
      // The first pinned GET failed: the caller's condition, or a new version since the HEAD.
      const now = await this.bucket.head(skey);
      if (ownCondition && now !== null && now.etag === head.etag) return got.failed;
      if (attempt >= RANGE_ATTEMPTS) throw objectChanged();
      head = now;
    }
  }

  /** One attempt of `getRange` on the version `head` describes. */
  private async rangeOf(
    skey: string,
    key: string,
    head: R2Object,
    options: SealedGetOptions,
  ): Promise<SealedObjectBody | SealedObject | { failed: SealedObject } | null> {
    const header = head.customMetadata?.[METADATA_KEY];
    const onlyIf = conditional(options.onlyIf);
    if (header === undefined) {
      this.checkPlaintext(head, key);
      const stored = await this.bucket.get(skey, { range: options.range!, onlyIf: options.onlyIf ?? {} });
      if (stored === null) return null;
      if (stored.customMetadata?.[METADATA_KEY] !== undefined || stored.customMetadata?.[PENDING_KEY] !== undefined) {
        // Sealed since the HEAD: never serve its bytes as plaintext; start again.
        if ("body" in stored) await stored.body.cancel();
        return { failed: plainDescribe(head, key) };
      }
      return "body" in stored ? withBody(plainDescribe(stored, key), stored.body) : plainDescribe(stored, key);
    }
    const opener = this.opener(header, key);
    let base: SealedObject;
    try {
      base = describe(head, opener, key);
    } catch (e) {
      opener.free();
      throw e;
    }
    // Every fetch is pinned to the object `head` saw; a caller's own etag condition that
    // differs from it fails like R2's precondition would.
    if (onlyIf.etagMatches !== undefined && !etagListMatches(onlyIf.etagMatches, head.etag)) {
      opener.free();
      return base;
    }
    const pinned: R2Conditional = { ...onlyIf, etagMatches: head.etag };
    const total = base.size;
    let start: number;
    let end: number;
    try {
      [start, end] = plaintextRange(options.range!, total);
    } catch (e) {
      opener.free();
      throw e;
    }
    const storedSize = head.size;
    const salts = new Map<number, Uint8Array>();
    const fetchRange = async (offset: number, length: number): Promise<Uint8Array | null> => {
      const got = await this.bucket.get(skey, { range: { offset, length }, onlyIf: pinned });
      if (got === null || !("body" in got)) return null;
      const bytes = new Uint8Array(await got.arrayBuffer());
      if (bytes.length !== length) throw new IntegrityError("CORRUPT", "authentication failed: the object is corrupted or was tampered with");
      return bytes;
    };
    // One window: plan it, fetch salt(s) and chunks, open.
    const fetchWindow = async (ws: number, we: number): Promise<Uint8Array | null> => {
      const plan = wasmCall(() => opener.rangePlan(storedSize, ws, we));
      const parts: Uint8Array[] = [];
      for (let i = 3; i < plan.length; i += 4) {
        const [saltStart, saltEnd, chunksStart, chunksEnd] = Array.from(plan.subarray(i, i + 4)) as [number, number, number, number];
        let salt = salts.get(saltStart);
        let chunks: Uint8Array | null;
        if (salt === undefined && chunksStart - saltEnd <= 65552) {
          const both = await fetchRange(saltStart, chunksEnd - saltStart);
          if (both === null) return null;
          salt = both.slice(0, saltEnd - saltStart);
          chunks = both.subarray(chunksStart - saltStart);
        } else {
          if (salt === undefined) {
            const s = await fetchRange(saltStart, saltEnd - saltStart);
            if (s === null) return null;
            salt = s;
          }
          chunks = await fetchRange(chunksStart, chunksEnd - chunksStart);
          if (chunks === null) return null;
        }
        salts.set(saltStart, salt);
        parts.push(salt, chunks);
      }
      return wasmCall(() => opener.openRange(storedSize, ws, we, concat(parts)));
    };
    // A range within one stream (a single-stream object, or inside one part): one ranged
    // GET streams its chunks and each window opens from the bytes as they arrive, instead
    // of one GET per window. The salt comes with it if it is near, else in its own GET.
    let whole: Float64Array;
    try {
      whole = wasmCall(() => opener.rangePlan(storedSize, start, end));
    } catch (e) {
      opener.free();
      throw e;
    }
    let streamWindow: ((ws: number, we: number) => Promise<Uint8Array | null>) | null = null;
    let releaseStream = (): void => undefined;
    if (whole.length === 7) {
      const [saltStart, saltEnd, chunksStart, chunksEnd] = Array.from(whole.subarray(3, 7)) as [number, number, number, number];
      let reader: ReadableStreamDefaultReader<Uint8Array> | null = null;
      let salt: Uint8Array | null = null;
      let pending: Uint8Array = new Uint8Array(0);
      let at = chunksStart;
      const corrupt = () => new IntegrityError("CORRUPT", "authentication failed: the object is corrupted or was tampered with");
      const take = async (n: number): Promise<Uint8Array> => {
        const parts: Uint8Array[] = [];
        let have = 0;
        while (have < n) {
          if (pending.length === 0) {
            const r = await reader!.read();
            if (r.done) throw corrupt(); // shorter than the range asked for
            pending = toBytes(r.value);
          }
          const k = Math.min(n - have, pending.length);
          parts.push(pending.subarray(0, k));
          pending = pending.subarray(k);
          have += k;
        }
        return concat(parts);
      };
      releaseStream = () => {
        reader?.cancel().catch(() => undefined);
        reader = null;
      };
      streamWindow = async (ws, we) => {
        const plan = wasmCall(() => opener.rangePlan(storedSize, ws, we));
        const [cs, ce] = Array.from(plan.subarray(5, 7)) as [number, number];
        if (plan.length !== 7 || cs !== at) throw corrupt(); // windows tile the range: cannot happen
        if (reader === null) {
          const near = chunksStart - saltEnd <= 65552;
          if (!near) {
            salt = await fetchRange(saltStart, saltEnd - saltStart);
            if (salt === null) return null;
          }
          const from = near ? saltStart : chunksStart;
          const got = await this.bucket.get(skey, { range: { offset: from, length: chunksEnd - from }, onlyIf: pinned });
          if (got === null || !("body" in got)) return null;
          reader = got.body.getReader();
          if (near) {
            salt = (await take(saltEnd - saltStart)).slice();
            await take(chunksStart - saltEnd);
          }
        }
        const chunks = await take(ce - cs);
        at = ce;
        if (ce === chunksEnd) releaseStream();
        return wasmCall(() => opener.openRange(storedSize, ws, we, concat([salt!, chunks])));
      };
    }
    const openWindow = async (ws: number, we: number): Promise<Uint8Array | null> =>
      streamWindow !== null ? streamWindow(ws, we) : fetchWindow(ws, we);
    // Windows aligned to 64 KiB chunks, so no chunk is fetched twice.
    const windows: [number, number][] = [];
    for (let ws = start; ws <= end; ) {
      const we = Math.min(end, Math.floor(ws / RANGE_WINDOW) * RANGE_WINDOW + RANGE_WINDOW - 1);
      windows.push([ws, we]);
      ws = we + 1;
    }
    let first: Uint8Array | null;
    try {
      first = await openWindow(windows[0]![0], windows[0]![1]);
    } catch (e) {
      releaseStream();
      opener.free();
      throw e;
    }
    if (first === null) {
      opener.free();
      return { failed: base }; // the caller's condition failed, or the object changed
    }
    const meta: SealedObject = { ...base, range: { offset: start, length: end - start + 1 } };
    let next = 1;
    let pendingFirst: Uint8Array | null = first;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          if (pendingFirst !== null) {
            controller.enqueue(pendingFirst);
            pendingFirst = null;
          } else if (next < windows.length) {
            const [ws, we] = windows[next++]!;
            const chunk = await openWindow(ws, we);
            if (chunk === null) throw objectChanged();
            controller.enqueue(chunk);
          }
          if (pendingFirst === null && next >= windows.length) {
            controller.close();
            opener.free();
          }
        } catch (e) {
          releaseStream();
          opener.free();
          controller.error(fromWasm(e));
        }
      },
      cancel() {
        releaseStream();
        opener.free();
      },
    });
    return withBody(meta, body);
  }

  /** Uploads a ciphertext stream: one put if it fits one part, else multipart. */
  private async multipartOrSingle(key: string, stored: R2PutOptions, ciphertext: ReadableStream<Uint8Array>): Promise<R2Object | null> {
    const reader = ciphertext.getReader();
    const buffer = new Uint8Array(this.partSize);
    let filled = 0;
    // Read up to one part plus one byte: only then is multipart needed.
    for (;;) {
      const { done, value } = await reader.read();
      if (done) {
        return await this.bucket.put(key, buffer.subarray(0, filled), stored);
      }
      if (filled + value.length <= this.partSize) {
        buffer.set(value, filled);
        filled += value.length;
        continue;
      }
      const head = concat([buffer.subarray(0, filled), value]);
      const rest = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(head);
        },
        async pull(controller) {
          const r = await reader.read();
          if (r.done) controller.close();
          else controller.enqueue(r.value);
        },
        cancel(reason) {
          return reader.cancel(reason);
        },
      });
      return await this.multipart(key, stored, rest);
    }
  }

  /** Multipart upload: equal parts of `partSize` stored bytes (the last may be shorter). */
  private async multipart(key: string, stored: R2PutOptions, ciphertext: ReadableStream<Uint8Array>): Promise<R2Object> {
    if (stored.onlyIf !== undefined) {
      await ciphertext.cancel();
      throw new InvalidArgumentError(
        "PRECONDITION_UNSUPPORTED",
        "onlyIf needs a single put (R2 multipart uploads are unconditional): at most MAX_SINGLE_PUT stored bytes, " +
          "and a ReadableStream beyond one part needs its size",
      );
    }
    const upload = await this.bucket.createMultipartUpload(key, {
      httpMetadata: stored.httpMetadata,
      customMetadata: stored.customMetadata,
    });
    const parts: R2UploadedPart[] = [];
    const reader = ciphertext.getReader();
    const buffer = new Uint8Array(this.partSize);
    let filled = 0;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        let offset = 0;
        while (offset < value.length) {
          const n = Math.min(value.length - offset, this.partSize - filled);
          buffer.set(value.subarray(offset, offset + n), filled);
          filled += n;
          offset += n;
          if (filled === this.partSize) {
            parts.push(await upload.uploadPart(parts.length + 1, buffer.slice()));
            filled = 0;
          }
        }
      }
      if (filled > 0 || parts.length === 0) {
        parts.push(await upload.uploadPart(parts.length + 1, buffer.slice(0, filled)));
      }
      return await upload.complete(parts);
    } catch (e) {
      await upload.abort().catch(() => undefined);
      throw e;
    }
  }
}

// ---- helpers ----

function plaintextError(key: string): PlaintextObjectError {
  return new PlaintextObjectError(
    "PLAINTEXT_OBJECT",
    `object ${JSON.stringify(key)} is not sealed (no r2seal header); enable allowPlaintext to serve unmigrated objects`,
  );
}

function unfinishedError(key: string): IntegrityError {
  return new IntegrityError(
    "UNFINISHED_UPLOAD",
    `object ${JSON.stringify(key)} is an unfinished sealed upload (r2seal-pending, its final header was never installed): it cannot be opened; upload it again`,
  );
}

function objectChanged(): ObjectChangedError {
  return new ObjectChangedError("OBJECT_CHANGED", "the object changed while it was being read: read it again");
}

/**
 * R2 refuses metadata over its limit with error 10012. The wrapper budgets R2's 8,192
 * bytes; local development (miniflare, `wrangler dev`) allows only 2,048.
 */
function fromR2(e: unknown): unknown {
  if (e instanceof Error && !(e instanceof SealError) && /\(10012\)/.test(e.message)) {
    return new HeaderTooLargeError(
      "HEADER_TOO_LARGE",
      "R2 refused the object's metadata as too large (10012): nothing was written. R2 allows 8,192 bytes; " +
        "local development (miniflare, wrangler dev) only 2,048",
    );
  }
  return e;
}

/** Single stream (metadata form): the plaintext size is a pure function of the stored size. */
function plaintextSize(storedSize: number): number {
  return plaintextLength(storedSize);
}

function describe(stored: R2Object, opener: Opener, key: string): SealedObject {
  const meta = JSON.parse(opener.metadata) as SealedMetadataOutput;
  const size = wasmCall(() => opener.plaintextLen(stored.size));
  const httpMetadata: R2HTTPMetadata = readableHttp(stored.httpMetadata);
  if (meta.contentEncoding !== undefined) httpMetadata.contentEncoding = meta.contentEncoding;
  if (meta.contentDisposition !== undefined) httpMetadata.contentDisposition = meta.contentDisposition;
  if (meta.contentLanguage !== undefined) httpMetadata.contentLanguage = meta.contentLanguage;
  return {
    key,
    version: stored.version,
    size,
    storedSize: stored.size,
    etag: stored.etag,
    httpEtag: stored.httpEtag,
    uploaded: stored.uploaded,
    httpMetadata,
    customMetadata: meta.customMetadata ?? {},
    md5: meta.md5,
    sealed: true,
    writeHttpMetadata: (headers: Headers) => writeHttp(httpMetadata, headers),
  };
}

/** The caller's view of an object just written: plaintext size, unsealed metadata. */
function written(stored: R2Object, key: string, readable: R2HTTPMetadata, meta: SealedMetadataInput): SealedObject {
  const httpMetadata: R2HTTPMetadata = { ...readable };
  if (meta.contentEncoding !== undefined) httpMetadata.contentEncoding = meta.contentEncoding;
  if (meta.contentDisposition !== undefined) httpMetadata.contentDisposition = meta.contentDisposition;
  if (meta.contentLanguage !== undefined) httpMetadata.contentLanguage = meta.contentLanguage;
  return {
    key,
    version: stored.version,
    size: plaintextSize(stored.size),
    storedSize: stored.size,
    etag: stored.etag,
    httpEtag: stored.httpEtag,
    uploaded: stored.uploaded,
    httpMetadata,
    customMetadata: { ...(meta.customMetadata ?? {}) },
    md5: meta.md5,
    sealed: true,
    writeHttpMetadata: (headers: Headers) => writeHttp(httpMetadata, headers),
  };
}

function plainDescribe(stored: R2Object, key: string): SealedObject {
  const httpMetadata = { ...stored.httpMetadata };
  return {
    key,
    version: stored.version,
    size: stored.size,
    storedSize: stored.size,
    etag: stored.etag,
    httpEtag: stored.httpEtag,
    uploaded: stored.uploaded,
    httpMetadata,
    customMetadata: { ...stored.customMetadata },
    range: stored.range && "offset" in stored.range && stored.range.offset !== undefined
      ? { offset: stored.range.offset, length: stored.range.length ?? stored.size - stored.range.offset }
      : undefined,
    sealed: false,
    writeHttpMetadata: (headers: Headers) => writeHttp(httpMetadata, headers),
  };
}

function readableHttp(http: R2HTTPMetadata | undefined): R2HTTPMetadata {
  const out: R2HTTPMetadata = {};
  if (http?.contentType !== undefined) out.contentType = http.contentType;
  if (http?.cacheControl !== undefined) out.cacheControl = http.cacheControl;
  if (http?.cacheExpiry !== undefined) out.cacheExpiry = http.cacheExpiry;
  return out;
}

function writeHttp(http: R2HTTPMetadata, headers: Headers): void {
  if (http.contentType) headers.set("content-type", http.contentType);
  if (http.contentLanguage) headers.set("content-language", http.contentLanguage);
  if (http.contentDisposition) headers.set("content-disposition", http.contentDisposition);
  if (http.contentEncoding) headers.set("content-encoding", http.contentEncoding);
  if (http.cacheControl) headers.set("cache-control", http.cacheControl);
  if (http.cacheExpiry) headers.set("expires", http.cacheExpiry.toUTCString());
}

function headersToHttp(h: Headers): R2HTTPMetadata {
  const out: R2HTTPMetadata = {};
  const get = (n: string) => h.get(n) ?? undefined;
  if (get("content-type")) out.contentType = get("content-type");
  if (get("content-language")) out.contentLanguage = get("content-language");
  if (get("content-disposition")) out.contentDisposition = get("content-disposition");
  if (get("content-encoding")) out.contentEncoding = get("content-encoding");
  if (get("cache-control")) out.cacheControl = get("cache-control");
  if (get("expires")) out.cacheExpiry = new Date(get("expires")!);
  return out;
}

/** Splits HTTP metadata into what stays readable on the stored object and what is sealed. */
function splitHttpMetadata(http: R2HTTPMetadata | Headers | undefined): {
  readable: R2HTTPMetadata;
  sealed: SealedMetadataInput;
} {
  const h = http instanceof Headers ? headersToHttp(http) : (http ?? {});
  const sealed: SealedMetadataInput = {};
  if (h.contentEncoding !== undefined) sealed.contentEncoding = h.contentEncoding;
  if (h.contentDisposition !== undefined) sealed.contentDisposition = h.contentDisposition;
  if (h.contentLanguage !== undefined) sealed.contentLanguage = h.contentLanguage;
  // Never contentEncoding on the stored ciphertext: R2 and caches would try to decode it.
  return { readable: readableHttp(h), sealed };
}

function conditional(onlyIf: R2Conditional | Headers | undefined): R2Conditional {
  if (onlyIf === undefined) return {};
  if (!(onlyIf instanceof Headers)) return { ...onlyIf };
  const out: R2Conditional = {};
  const im = onlyIf.get("if-match");
  const inm = onlyIf.get("if-none-match");
  const ims = onlyIf.get("if-modified-since");
  const ius = onlyIf.get("if-unmodified-since");
  if (im) out.etagMatches = im;
  if (inm) out.etagDoesNotMatch = inm;
  if (ims) out.uploadedAfter = new Date(ims);
  if (ius) out.uploadedBefore = new Date(ius);
  return out;
}

function etagListMatches(condition: string, etag: string): boolean {
  return condition
    .split(",")
    .map((s) => s.trim().replace(/^W\//, "").replace(/^"|"$/g, ""))
    .some((s) => s === "*" || s === etag);
}

/** An R2Range (or a Range header) over `total` plaintext bytes → inclusive [start, end]. */
function plaintextRange(range: R2Range | Headers, total: number): [number, number] {
  let r: R2Range = range as R2Range;
  if (range instanceof Headers) {
    const v = range.get("range");
    const m = v?.match(/^bytes=(\d*)-(\d*)$/);
    if (!m || (m[1] === "" && m[2] === "")) {
      throw new InvalidArgumentError("INVALID_ARGUMENT", "unsupported Range header (one bytes=a-b range)");
    }
    if (m[1] === "") r = { suffix: Number(m[2]) };
    else if (m[2] === "") r = { offset: Number(m[1]) };
    else r = { offset: Number(m[1]), length: Number(m[2]) - Number(m[1]) + 1 };
  }
  for (const field of ["offset", "length", "suffix"] as const) {
    const v = (r as Record<string, unknown>)[field];
    if (v !== undefined && (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0)) {
      throw new InvalidArgumentError("INVALID_ARGUMENT", `range ${field} must be a non-negative integer`);
    }
  }
  let start: number;
  let end: number;
  if ("suffix" in r && r.suffix !== undefined) {
    start = Math.max(0, total - r.suffix);
    end = total - 1;
    if (r.suffix <= 0) throw notSatisfiable();
  } else {
    const o = r as { offset?: number; length?: number };
    start = o.offset ?? 0;
    end = o.length === undefined ? total - 1 : start + o.length - 1;
    if (o.length !== undefined && o.length <= 0) throw notSatisfiable();
  }
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || start >= total || end < start) {
    throw notSatisfiable();
  }
  return [start, Math.min(end, total - 1)];
}

function notSatisfiable(): SealError {
  return fromWasm("RANGE_NOT_SATISFIABLE\u001frange not satisfiable") as SealError;
}

function withBody(meta: SealedObject, body: ReadableStream<Uint8Array>): SealedObjectBody {
  // Used means read: a reader holds the stream (a Response, pipeTo, getReader) or one
  // of the methods below drained it. Merely touching `.body` does not count.
  let drained = false;
  const all = async (): Promise<Uint8Array> => {
    if (drained || body.locked) throw new InvalidArgumentError("INVALID_STATE", "the body has already been read");
    drained = true;
    const parts: Uint8Array[] = [];
    const reader = body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value);
    }
    return concat(parts);
  };
  const object = {
    ...meta,
    get bodyUsed() {
      return drained || body.locked;
    },
    arrayBuffer: async () => {
      const b = await all();
      return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
    },
    bytes: all,
    text: async () => new TextDecoder().decode(await all()),
    json: async <T>() => {
      const text = new TextDecoder().decode(await all());
      try {
        return JSON.parse(text) as T;
      } catch {
        // V8's message quotes the text: the plaintext must not reach logs or clients.
        throw new InvalidJsonError("INVALID_JSON", `object ${JSON.stringify(meta.key)} is not valid JSON`);
      }
    },
  };
  // Not enumerable: `{...object}`, console.log and JSON.stringify must not touch the stream.
  Object.defineProperty(object, "body", { value: body, enumerable: false });
  return object as typeof object & { readonly body: ReadableStream<Uint8Array> };
}

/** Plaintext → payload. Counts bytes against a declared size. */
function sealStream(sealer: Sealer, size: number | undefined): TransformStream<Uint8Array, Uint8Array> {
  let seen = 0;
  return new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      const bytes = toBytes(chunk);
      seen += bytes.length;
      if (size !== undefined && seen > size) {
        throw new LengthMismatchError("LENGTH_MISMATCH", `the stream is longer than its declared size of ${size} bytes`);
      }
      const out = wasmCall(() => sealer.update(bytes));
      if (out.length > 0) controller.enqueue(out);
    },
    flush(controller) {
      if (size !== undefined && seen !== size) {
        throw new LengthMismatchError("LENGTH_MISMATCH", `the stream ended after ${seen} of its declared ${size} bytes`);
      }
      controller.enqueue(wasmCall(() => sealer.finish()));
    },
  });
}

/** Payload → plaintext: only authenticated bytes pass; truncation errors the stream. */
function openStream(opener: Opener): TransformStream<Uint8Array, Uint8Array> {
  return new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      try {
        const out = wasmCall(() => opener.update(chunk));
        if (out.length > 0) controller.enqueue(out);
      } catch (e) {
        opener.free();
        throw e;
      }
    },
    flush(controller) {
      try {
        const out = wasmCall(() => opener.finish());
        if (out.length > 0) controller.enqueue(out);
      } finally {
        opener.free();
      }
    },
  });
}

function toBytes(chunk: unknown): Uint8Array {
  if (chunk instanceof Uint8Array) return chunk;
  if (chunk instanceof ArrayBuffer) return new Uint8Array(chunk);
  if (ArrayBuffer.isView(chunk)) return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  if (typeof chunk === "string") return new TextEncoder().encode(chunk);
  throw new InvalidArgumentError("INVALID_ARGUMENT", "a stream chunk must be bytes");
}

/** Feeds the sealer 1 MiB at a time: wasm memory stays small whatever the value's size. */
function sealSlices(sealer: Sealer, bytes: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = 0; at < bytes.length; at += SLICE) {
    const sealed = wasmCall(() => sealer.update(bytes.subarray(at, at + SLICE)));
    if (sealed.length > 0) out.push(sealed);
  }
  return out;
}

const SLICE = 1024 * 1024;

function singleChunkStream(bytes: Uint8Array): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(bytes);
      controller.close();
    },
  });
}

function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function hex(buf: ArrayBuffer): string {
  return [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");
}
