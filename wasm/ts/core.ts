/**
 * The wasm core, initialised once per isolate from the imported `WebAssembly.Module`,
 * and the key set a Worker holds.
 */
import {
  initSync,
  Keys,
  NameCipher,
  Opener,
  Sealer,
  checkDescriptor,
  descriptorFor,
  fileFormHeader,
  generateSymKey as wasmGenerateSymKey,
  generateX25519 as wasmGenerateX25519,
  plaintextLength as wasmPlaintextLength,
  sealedLength as wasmSealedLength,
  splitFileForm,
} from "./wasm/r2seal_wasm.js";
import wasmModule from "./wasm/r2seal_wasm_bg.wasm";
import { IntegrityError, KeyConfigError, SealError, sealError, wasmCall } from "./errors.js";

let instance: { memory: WebAssembly.Memory } | null = null;

/**
 * Instantiates the wasm module (synchronously, from the module workerd compiled at
 * upload time). Called lazily by everything below; idempotent.
 */
export function init(): void {
  if (instance === null) {
    instance = initSync({ module: wasmModule });
  }
}

/** Current size of the wasm linear memory (its high-water mark: it never shrinks). */
export function wasmMemoryBytes(): number {
  init();
  return instance!.memory.buffer.byteLength;
}

export { Keys, NameCipher, Opener, Sealer, checkDescriptor, descriptorFor };

/** Where keys come from: secrets by name, write-only recipients, defaults, policies. */
export interface SealKeysConfig {
  /** Keys that seal and open: name → `R2SEAL-SYM-KEY-1…` or `AGE-SECRET-KEY-1…`. */
  identities?: Record<string, string>;
  /** Write-only keys: name → `age1…`. The Worker seals to them but cannot open. */
  recipients?: Record<string, string>;
  /** Recipient names marked as recovery keys (as in the native keyring). */
  recovery?: string[];
  /** Names sealed to when no policy matches. Default: every key. */
  defaults?: string[];
  /**
   * `R2SEAL-SYM-KEY-1…` whose derived name key encrypts object names (SECURITY.md
   * §3.10): the keyring's `names` key (`r2seal key export-secret KEY`).
   */
  names?: string;
  /** Prefix → key names. The longest matching prefix wins (plain string prefixes). */
  policies?: Record<string, string[]>;
}

/** Environment variables `SealKeys.fromEnv` reads (all strings: Worker secrets/vars). */
export interface SealEnv {
  /** The Worker's read-write key, `R2SEAL-SYM-KEY-1…` (named "main"). */
  R2SEAL_KEY?: string;
  /** `R2SEAL_KEY_<NAME>`: more read-write keys; `R2SEAL_RECIPIENT_<NAME>`: write-only `age1…`. */
  [name: string]: unknown;
  /** Comma-separated key names to seal to when no policy matches. */
  R2SEAL_DEFAULTS?: string;
  /** JSON: `{"archive/": ["recovery"]}`. */
  R2SEAL_POLICIES?: string;
  /** `R2SEAL-SYM-KEY-1…`: encrypt object names under this key's name key. */
  R2SEAL_NAMES_KEY?: string;
  /** "true" or "1": serve objects that are not sealed yet. */
  R2SEAL_ALLOW_PLAINTEXT?: string;
}

const NAME_RE = /^[A-Za-z0-9_.-]+$/;

/** The fixed names `fromEnv` reads (besides `R2SEAL_KEY_<NAME>` and `R2SEAL_RECIPIENT_<NAME>`). */
const WORKER_VARIABLES = new Set(["R2SEAL_KEY", "R2SEAL_NAMES_KEY", "R2SEAL_DEFAULTS", "R2SEAL_POLICIES", "R2SEAL_ALLOW_PLAINTEXT"]);
/** Read by the native CLI and its tooling, not by a Worker: tolerated in a shared env, ignored. */
const NATIVE_VARIABLES = new Set([
  "R2SEAL_KEYRING",
  "R2SEAL_PASSPHRASE",
  "R2SEAL_S3_SDK_ONLY",
  "R2SEAL_PATH_STYLE",
  "R2SEAL_GATEWAY_ACCESS_KEY_ID",
  "R2SEAL_GATEWAY_SECRET_ACCESS_KEY",
  "R2SEAL_CACHE",
  "R2SEAL_CACHE_MAX_GIB",
  "R2SEAL_BIN",
]);

/** A var or secret (string, number, boolean, JSON), not a binding (an R2 bucket named R2SEAL_… is fine). */
function isConfigValue(value: unknown): boolean {
  if (value === null || typeof value !== "object") return typeof value !== "function" && value !== undefined;
  return Array.isArray(value) || Object.getPrototypeOf(value) === Object.prototype;
}

/** The keys a Worker holds, as a native-keyring-equivalent policy set. */
export class SealKeys {
  /** @internal */
  readonly keys: Keys;
  /** The name cipher when object names are encrypted, else null. */
  readonly names: NameCipher | null;

  private constructor(keys: Keys, names: NameCipher | null = null) {
    this.keys = keys;
    this.names = names;
  }

  static fromConfig(config: SealKeysConfig): SealKeys {
    init();
    const keys = new Keys();
    const recovery = new Set(config.recovery ?? []);
    const identities = Object.entries(config.identities ?? {});
    const recipients = Object.entries(config.recipients ?? {});
    if (identities.length === 0 && recipients.length === 0) {
      throw new KeyConfigError("MISSING_KEY", "no key configured: give at least one identity or recipient");
    }
    for (const [name, secret] of identities) {
      checkName(name);
      if (typeof secret !== "string" || secret.trim() === "") {
        throw new KeyConfigError("MISSING_KEY", `key ${JSON.stringify(name)} is empty`);
      }
      wasmCall(() => keys.addIdentity(name, secret), `key ${JSON.stringify(name)}`);
    }
    for (const [name, recipient] of recipients) {
      checkName(name);
      if (typeof recipient !== "string" || recipient.trim() === "") {
        throw new KeyConfigError("MISSING_KEY", `recipient ${JSON.stringify(name)} is empty`);
      }
      wasmCall(() => keys.addRecipient(name, recipient, recovery.has(name)), `recipient ${JSON.stringify(name)}`);
    }
    if (config.defaults && config.defaults.length > 0) {
      const defaults = config.defaults;
      wasmCall(() => keys.setDefaults(defaults), "defaults");
    }
    for (const [prefix, names] of Object.entries(config.policies ?? {})) {
      if (!Array.isArray(names) || names.some((n) => typeof n !== "string")) {
        throw new KeyConfigError("INVALID_CONFIG", `the policy for ${JSON.stringify(prefix)} is not a list of key names`);
      }
      wasmCall(() => keys.setPolicy(prefix, names), `policy ${JSON.stringify(prefix)}`);
    }
    const namesKey = config.names;
    const names = namesKey === undefined ? null : wasmCall(() => new NameCipher(namesKey), "names (R2SEAL_NAMES_KEY)");
    return new SealKeys(keys, names);
  }

  /**
   * Reads `R2SEAL_KEY` (read-write, "main"), `R2SEAL_KEY_<NAME>` (more read-write keys),
   * `R2SEAL_RECIPIENT_<NAME>` (write-only `age1…`, name lower-cased), `R2SEAL_DEFAULTS`,
   * `R2SEAL_POLICIES` and `R2SEAL_NAMES_KEY`. Errors name the variable, never its value.
   * Any other `R2SEAL_*` variable is refused (`INVALID_CONFIG`): a misspelt one would
   * otherwise be ignored silently (e.g. names left unencrypted), except those the native
   * CLI reads (`R2SEAL_KEYRING`, …), which are ignored here.
   * `env` is any object (a wrangler `interface Env` has no index signature).
   */
  static fromEnv(env: object): SealKeys {
    const vars = env as Record<string, unknown>;
    const config: SealKeysConfig = { identities: {}, recipients: {}, recovery: [] };
    // Present means meant: an empty value is an error, never "names off".
    if (vars["R2SEAL_NAMES_KEY"] !== undefined) {
      config.names = secretString("R2SEAL_NAMES_KEY", vars["R2SEAL_NAMES_KEY"]);
    }
    for (const [variable, value] of Object.entries(vars)) {
      let m: RegExpMatchArray | null;
      if (variable === "R2SEAL_KEY" || (m = variable.match(/^R2SEAL_KEY_([A-Z0-9_]+)$/))) {
        const name = variable === "R2SEAL_KEY" ? "main" : variable.slice("R2SEAL_KEY_".length).toLowerCase();
        config.identities![name] = secretString(variable, value);
      } else if ((m = variable.match(/^R2SEAL_RECIPIENT_([A-Z0-9_]+)$/))) {
        const name = m[1]!.toLowerCase();
        config.recipients![name] = secretString(variable, value);
        if (name.startsWith("recovery")) config.recovery!.push(name);
      } else if (variable.startsWith("R2SEAL_") && !WORKER_VARIABLES.has(variable) && !NATIVE_VARIABLES.has(variable) && isConfigValue(value)) {
        throw new KeyConfigError(
          "INVALID_CONFIG",
          `${variable} is not an r2seal Worker variable (R2SEAL_KEY, R2SEAL_KEY_<NAME>, R2SEAL_RECIPIENT_<NAME>, ` +
            "R2SEAL_NAMES_KEY, R2SEAL_DEFAULTS, R2SEAL_POLICIES, R2SEAL_ALLOW_PLAINTEXT; <NAME> in upper case)",
        );
      }
    }
    if (Object.keys(config.identities!).length === 0 && Object.keys(config.recipients!).length === 0) {
      throw new KeyConfigError(
        "MISSING_KEY",
        "R2SEAL_KEY is not set: add the Worker's key as a secret (`wrangler secret put R2SEAL_KEY`, value R2SEAL-SYM-KEY-1…)",
      );
    }
    const defaults = vars["R2SEAL_DEFAULTS"];
    if (defaults !== undefined) {
      config.defaults = String(defaults)
        .split(",")
        .map((s) => s.trim())
        .filter((s) => s !== "");
    }
    const policies = vars["R2SEAL_POLICIES"];
    if (policies !== undefined) {
      let parsed: unknown;
      try {
        parsed = typeof policies === "string" ? JSON.parse(policies) : policies;
      } catch {
        throw new KeyConfigError("INVALID_CONFIG", 'R2SEAL_POLICIES is not JSON ({"prefix/": ["key name", …]})');
      }
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
        throw new KeyConfigError("INVALID_CONFIG", 'R2SEAL_POLICIES must be a JSON object ({"prefix/": ["key name", …]})');
      }
      config.policies = parsed as Record<string, string[]>;
    }
    try {
      return SealKeys.fromConfig(config);
    } catch (e) {
      throw renameForEnv(e);
    }
  }

  /** Descriptions of the recipients an object at `key` is sealed to (diagnostics). */
  recipientsFor(key: string): string[] {
    return wasmCall(() => this.keys.recipientsFor(key));
  }

  /** Whether this Worker can open anything at all (false: write-only). */
  get canOpen(): boolean {
    return this.keys.identityCount > 0;
  }
}

function checkName(name: string): void {
  if (!NAME_RE.test(name)) {
    throw new KeyConfigError("INVALID_CONFIG", `invalid key name ${JSON.stringify(name)}`);
  }
}

function secretString(variable: string, value: unknown): string {
  if (typeof value !== "string") {
    throw new KeyConfigError("INVALID_KEY", `${variable} must be a string secret`);
  }
  if (value.trim() === "") {
    throw new KeyConfigError("MISSING_KEY", `${variable} is empty`);
  }
  return value;
}

/** `R2SEAL_ALLOW_PLAINTEXT`: unset, or true/1/false/0 (anything else is a typo, refused). */
export function allowPlaintextFromEnv(env: object): boolean | undefined {
  const value = (env as Record<string, unknown>)["R2SEAL_ALLOW_PLAINTEXT"];
  if (value === undefined) return undefined;
  const flag = String(value).trim().toLowerCase();
  if (flag === "true" || flag === "1") return true;
  if (flag === "false" || flag === "0" || flag === "") return false;
  throw new KeyConfigError("INVALID_CONFIG", "R2SEAL_ALLOW_PLAINTEXT must be true, 1, false or 0");
}

/**
 * Parses an object's `r2seal` header value for opening. A value that is not a header
 * at all was tampered with (the object *has* the header key): `MALFORMED`, an
 * `IntegrityError`, never the "not sealed" of an object without one.
 */
export function openerFor(keys: SealKeys, header: string, name: string): Opener {
  init();
  try {
    return wasmCall(() => new Opener(keys.keys, header, name));
  } catch (e) {
    if (e instanceof SealError && e.code === "NOT_SEALED") {
      throw new IntegrityError("MALFORMED", "the r2seal header does not parse: the object is corrupted or was tampered with");
    }
    throw e;
  }
}

/** Maps "key \"main\": …" to "R2SEAL_KEY: …" so the message names the variable. */
function renameForEnv(e: unknown): unknown {
  if (e instanceof KeyConfigError) {
    const message = e.message
      .replace(/^key "main"/, "R2SEAL_KEY")
      .replace(/^key "([^"]+)"/, (_, n: string) => `R2SEAL_KEY_${n.toUpperCase()}`)
      .replace(/^recipient "([^"]+)"/, (_, n: string) => `R2SEAL_RECIPIENT_${n.toUpperCase()}`);
    return new KeyConfigError(e.code, message);
  }
  return e;
}

/** The stored length of a single-stream payload of `plaintextLength` bytes. */
export function sealedLength(plaintextLength: number): number {
  init();
  return wasmCall(() => wasmSealedLength(plaintextLength));
}

/** The plaintext length of a stored body (metadata form), without any key. */
export function plaintextLength(storedLength: number): number {
  init();
  return wasmCall(() => wasmPlaintextLength(storedLength));
}

/** A new `R2SEAL-SYM-KEY-1…` (a secret: store it with `wrangler secret put`). */
export function generateSymKey(): string {
  init();
  return wasmGenerateSymKey();
}

/** A new age X25519 key pair: the identity (secret) and its `age1…` recipient. */
export function generateX25519(): { identity: string; recipient: string } {
  init();
  const [identity, recipient] = wasmGenerateX25519();
  return { identity: identity!, recipient: recipient! };
}

/** File form (header ‖ body, an age file) → metadata form (`customMetadata.r2seal`, body). */
export function fromFileForm(file: Uint8Array): { header: string; body: Uint8Array } {
  init();
  const [header, used] = wasmCall(() => splitFileForm(file));
  return { header: header as string, body: file.subarray(used as number) };
}

/** Metadata form → file form: the age file the native CLI (`r2seal open`) reads. */
export function toFileForm(header: string, body: Uint8Array): Uint8Array {
  init();
  const head = wasmCall(() => fileFormHeader(header));
  const out = new Uint8Array(head.length + body.length);
  out.set(head, 0);
  out.set(body, head.length);
  return out;
}

/** Seals bytes in memory: returns the `customMetadata.r2seal` value and the stored body. */
export function sealBytes(
  keys: SealKeys,
  name: string,
  plaintext: Uint8Array,
  metadata: SealedMetadataInput = {},
): { header: string; body: Uint8Array } {
  init();
  const sealer = wasmCall(() => new Sealer(keys.keys, name, JSON.stringify(metadata)));
  try {
    const parts: Uint8Array[] = [];
    for (let at = 0; at < plaintext.length; at += SLICE) {
      parts.push(sealer.update(plaintext.subarray(at, at + SLICE)));
    }
    parts.push(sealer.finish());
    return { header: sealer.header, body: join(parts) };
  } finally {
    sealer.free();
  }
}

/** Opens a metadata-form object in memory. */
export function openBytes(
  keys: SealKeys,
  name: string,
  header: string,
  body: Uint8Array,
): { plaintext: Uint8Array; metadata: SealedMetadataOutput } {
  const opener = openerFor(keys, header, name);
  try {
    const parts: Uint8Array[] = [];
    for (let at = 0; at < body.length; at += SLICE) {
      parts.push(wasmCall(() => opener.update(body.subarray(at, at + SLICE))));
    }
    parts.push(wasmCall(() => opener.finish()));
    return { plaintext: join(parts), metadata: JSON.parse(opener.metadata) as SealedMetadataOutput };
  } finally {
    opener.free();
  }
}

/** In-memory values cross into wasm 1 MiB at a time, so its memory stays small. */
const SLICE = 1024 * 1024;

function join(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Sealed metadata as the sealer takes it (`SealedMetadata`, camelCase). */
export interface SealedMetadataInput {
  size?: number;
  md5?: string;
  contentEncoding?: string;
  contentDisposition?: string;
  contentLanguage?: string;
  customMetadata?: Record<string, string>;
}

export interface SealedMetadataOutput extends SealedMetadataInput {
  customMetadata: Record<string, string>;
}

export function unsupported(message: string): never {
  throw sealError("INVALID_ARGUMENT", message);
}
