/**
 * Typed errors. Every failure r2seal reports is a `SealError` (or a subclass) with a
 * stable `code`. Messages come from the Rust core, which never quotes key material;
 * configuration errors name the environment variable, never its value.
 */
import type { SealedObject } from "./bucket.js";

export type SealErrorCode =
  | "MISSING_KEY"
  | "INVALID_KEY"
  | "INVALID_CONFIG"
  | "INVALID_RECIPIENTS"
  | "NO_MATCHING_KEY"
  | "CORRUPT"
  | "MALFORMED"
  | "UNSUPPORTED_VERSION"
  | "WRONG_NAME"
  | "NAME_REQUIRED"
  | "NOT_SEALED"
  | "PLAINTEXT_OBJECT"
  | "RANGE_NOT_SATISFIABLE"
  | "HEADER_TOO_LARGE"
  | "LENGTH_MISMATCH"
  | "PRECONDITION_UNSUPPORTED"
  | "INVALID_ARGUMENT"
  | "INVALID_STATE"
  | "VECTOR_FAILED"
  | "NAME_TOO_LONG"
  | "DESCRIPTOR_MISMATCH"
  | "DESCRIPTOR_INVALID"
  | "UNFINISHED_UPLOAD"
  | "INVALID_JSON"
  | "OBJECT_CHANGED"
  | "PRECONDITION_FAILED"
  | "ERROR";

export class SealError extends Error {
  readonly code: SealErrorCode;
  constructor(code: SealErrorCode, message: string) {
    super(message);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A key secret is missing or malformed, or the policies name unknown keys. */
export class KeyConfigError extends SealError {}

/** The object is sealed only to keys this Worker does not hold (e.g. a write-only prefix). */
export class NoMatchingKeyError extends SealError {}

/**
 * The object failed authentication or does not parse: tampered, truncated, extended,
 * moved to another key (`WRONG_NAME`), an `r2seal` header that is not one (`MALFORMED`),
 * written by a newer format version, or an unfinished sealed upload
 * (`UNFINISHED_UPLOAD`: `r2seal-pending` and no `r2seal`; never readable, upload it again).
 */
export class IntegrityError extends SealError {}

/** The object has no r2seal header: it is stored in plaintext (see `allowPlaintext`). */
export class PlaintextObjectError extends SealError {}

/** `json()` / `getJson`: the object opened (it is authentic) but is not JSON. The message quotes none of it. */
export class InvalidJsonError extends SealError {}

/**
 * The object was replaced or deleted while it was being read (a ranged read fetches it
 * in several requests, all pinned to one version). Reading again is safe.
 */
export class ObjectChangedError extends SealError {}

/**
 * `getJson` with `onlyIf`: the condition failed (e.g. not modified). `object` is the
 * stored object's metadata, as R2's `get` returns it on a failed condition.
 */
export class PreconditionFailedError extends SealError {
  readonly object?: SealedObject;
  constructor(code: SealErrorCode, message: string, object?: SealedObject) {
    super(code, message);
    this.object = object;
  }
}

/** A byte range outside the object. */
export class RangeNotSatisfiableError extends SealError {}

/** The envelope would not fit R2's metadata budget: nothing was written. */
export class HeaderTooLargeError extends SealError {}

/** A streamed value did not have the length it declared: nothing was stored. */
export class LengthMismatchError extends SealError {}

/** A caller error: a bad option or argument. */
export class InvalidArgumentError extends SealError {}

/**
 * The bucket descriptor (`.r2seal/descriptor`) describes another configuration than
 * this Worker's keys (`DESCRIPTOR_MISMATCH`), or is forged or unreadable
 * (`DESCRIPTOR_INVALID`): nothing was written.
 */
export class DescriptorError extends SealError {}

const CLASSES: Partial<Record<SealErrorCode, new (code: SealErrorCode, message: string) => SealError>> = {
  MISSING_KEY: KeyConfigError,
  INVALID_KEY: KeyConfigError,
  INVALID_CONFIG: KeyConfigError,
  INVALID_RECIPIENTS: KeyConfigError,
  NO_MATCHING_KEY: NoMatchingKeyError,
  CORRUPT: IntegrityError,
  MALFORMED: IntegrityError,
  UNSUPPORTED_VERSION: IntegrityError,
  WRONG_NAME: IntegrityError,
  NAME_REQUIRED: IntegrityError,
  UNFINISHED_UPLOAD: IntegrityError,
  INVALID_JSON: InvalidJsonError,
  OBJECT_CHANGED: ObjectChangedError,
  PRECONDITION_FAILED: PreconditionFailedError,
  NOT_SEALED: PlaintextObjectError,
  PLAINTEXT_OBJECT: PlaintextObjectError,
  RANGE_NOT_SATISFIABLE: RangeNotSatisfiableError,
  HEADER_TOO_LARGE: HeaderTooLargeError,
  LENGTH_MISMATCH: LengthMismatchError,
  PRECONDITION_UNSUPPORTED: InvalidArgumentError,
  INVALID_ARGUMENT: InvalidArgumentError,
  INVALID_STATE: InvalidArgumentError,
  NAME_TOO_LONG: InvalidArgumentError,
  DESCRIPTOR_MISMATCH: DescriptorError,
  DESCRIPTOR_INVALID: DescriptorError,
};

export function sealError(code: SealErrorCode, message: string): SealError {
  const Class = CLASSES[code] ?? SealError;
  return new Class(code, message);
}

/** The wasm side throws `"<CODE>\u001f<message>"` strings; turn them into classes. */
export function fromWasm(thrown: unknown, context?: string): unknown {
  if (typeof thrown === "string") {
    const at = thrown.indexOf("\u001f");
    const code = (at >= 0 ? thrown.slice(0, at) : "ERROR") as SealErrorCode;
    const message = at >= 0 ? thrown.slice(at + 1) : thrown;
    return sealError(code, context ? `${context}: ${message}` : message);
  }
  return thrown;
}

/** Runs a wasm call, converting what it throws. */
export function wasmCall<T>(f: () => T, context?: string): T {
  try {
    return f();
  } catch (e) {
    throw fromWasm(e, context);
  }
}
