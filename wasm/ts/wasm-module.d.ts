// A `.wasm` import is a compiled `WebAssembly.Module` in workerd (wrangler's and
// miniflare's `CompiledWasm` module rule): Workers cannot compile wasm at run time.
declare module "*.wasm" {
  const module: WebAssembly.Module;
  export default module;
}
