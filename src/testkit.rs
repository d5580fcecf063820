//! Known-answer vector files: parser and checker, sans-IO so the native tests and
//! the wasm build run the very same files (tests/vectors/).
