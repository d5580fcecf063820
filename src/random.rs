//! The one source of randomness: the OS CSPRNG (getrandom; `crypto.getRandomValues`
//! on wasm32 through the wasm crate's `js` feature).

pub(crate) fn fill(buf: &mut [u8]) {
    // There is no safe way to continue without randomness: sealing under a
    // predictable key would be worse than stopping.
    getrandom::getrandom(buf).expect("the operating system's random source failed");
}
