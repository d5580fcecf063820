/**
 * r2seal for Cloudflare Workers.
 *
 * ```ts
 * import { SealedBucket } from "r2seal-wasm";
 * export default {
 *   async fetch(req: Request, env: Env) {
 *     const bucket = SealedBucket.fromEnv(env.BUCKET, env); // R2SEAL_KEY, R2SEAL_RECIPIENT_*, R2SEAL_POLICIES
 *     await bucket.putJson("sessions/1.json", { role: "user" });
 *     return Response.json(await bucket.getJson("sessions/1.json"));
 *   },
 * };
 * ```
 *
 * The wasm module is imported as a compiled `WebAssembly.Module` (wrangler/miniflare
 * `CompiledWasm` rule) and instantiated synchronously on first use with `initSync`.
 */
export {
  SealedBucket,
  METADATA_KEY,
  RESERVED_PREFIX,
  DESCRIPTOR_KEY,
  MIN_PART_SIZE,
  DEFAULT_PART_SIZE,
  MAX_SINGLE_PUT,
  type SealedBucketOptions,
  type SealedGetOptions,
  type SealedListEntry,
  type SealedObject,
  type SealedObjectBody,
  type SealedObjects,
  type SealedPutOptions,
  type SealedPutValue,
} from "./bucket.js";
export {
  SealKeys,
  init,
  wasmMemoryBytes,
  sealedLength,
  plaintextLength,
  generateSymKey,
  generateX25519,
  fromFileForm,
  toFileForm,
  sealBytes,
  openBytes,
  type SealEnv,
  type SealKeysConfig,
  type SealedMetadataInput,
  type SealedMetadataOutput,
} from "./core.js";
export {
  SealError,
  KeyConfigError,
  NoMatchingKeyError,
  IntegrityError,
  PlaintextObjectError,
  InvalidJsonError,
  ObjectChangedError,
  PreconditionFailedError,
  RangeNotSatisfiableError,
  HeaderTooLargeError,
  LengthMismatchError,
  InvalidArgumentError,
  DescriptorError,
  type SealErrorCode,
} from "./errors.js";
