#!/usr/bin/env node
// Builds the npm-style package in wasm/pkg/:
//   cargo (wasm32, release) → wasm-bindgen --target web → wasm-opt -Oz → tsc → package.json
// and, for the workerd tests only, wasm/pkg-vectors/: the same crate with feature `vectors`
// (checkVector / checkNameVector over `r2seal::testkit`), not run through wasm-opt and not
// part of the package or its size.
// Tools: wasm-bindgen at exactly the version Cargo.lock pins (PATH, or
// $R2SEAL_CACHE/tools/bin as .ci/wasm.sh installs it); wasm-opt and tsc from node_modules.
// Env: CARGO_TARGET_DIR (default wasm/target), CARGO_BUILD_JOBS (default 2).
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const pkg = join(root, "pkg");
const targetDir = process.env.CARGO_TARGET_DIR || join(root, "target");
const cache = process.env.R2SEAL_CACHE || join(homedir(), ".cache", "r2seal-ci");

function run(cmd, args, opts = {}) {
  execFileSync(cmd, args, { stdio: "inherit", cwd: root, ...opts });
}

function lockedVersion(name) {
  const lock = readFileSync(join(root, "Cargo.lock"), "utf8");
  const m = lock.match(new RegExp(`name = "${name}"\\nversion = "([^"]+)"`));
  if (!m) throw new Error(`${name} is not in wasm/Cargo.lock`);
  return m[1];
}

function findWasmBindgen(version) {
  const candidates = [join(cache, "tools", "bin", "wasm-bindgen"), "wasm-bindgen"];
  for (const c of candidates) {
    try {
      const out = execFileSync(c, ["--version"], { encoding: "utf8" }).trim();
      if (out.endsWith(` ${version}`)) return c;
    } catch {
      // not there
    }
  }
  throw new Error(
    `wasm-bindgen ${version} not found (PATH or ${cache}/tools/bin): ` +
      `cargo install wasm-bindgen-cli --version ${version} --root "${cache}/tools"`,
  );
}

// `--if-stale`: skip when pkg/ is newer than every input (the Rust core, this crate, ts/).
function newest(path) {
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  let m = st.mtimeMs;
  for (const e of readdirSync(path)) m = Math.max(m, newest(join(path, e)));
  return m;
}
const built = [join(pkg, "sizes.json"), join(root, "pkg-vectors", "r2seal_wasm_bg.wasm")];
if (process.argv.includes("--if-stale") && built.every((f) => existsSync(f))) {
  const built = statSync(join(pkg, "sizes.json")).mtimeMs;
  const inputs = [
    join(root, "src"),
    join(root, "ts"),
    join(root, "Cargo.toml"),
    join(root, "Cargo.lock"),
    join(root, "tsconfig.json"),
    join(root, "..", "src"),
    join(root, "..", "Cargo.toml"),
  ];
  if (Math.max(...inputs.map(newest)) < built) {
    console.log("r2seal-wasm: pkg/ is up to date");
    process.exit(0);
  }
}

const t0 = Date.now();
const version = lockedVersion("wasm-bindgen");
const wasmBindgen = findWasmBindgen(version);

/** Release build of this crate for wasm32; returns the .wasm it wrote (the same path for
 *  any features: read it before the next build). */
function cargoWasm(features) {
  run("cargo", [
    "build",
    "--locked",
    "--release",
    "--lib",
    "--target",
    "wasm32-unknown-unknown",
    ...features,
    "-j",
    process.env.CARGO_BUILD_JOBS || "2",
  ]);
  return join(targetDir, "wasm32-unknown-unknown", "release", "r2seal_wasm.wasm");
}

const raw = cargoWasm([]);
const rawBytes = statSync(raw).size;
rmSync(pkg, { recursive: true, force: true });
mkdirSync(join(pkg, "wasm"), { recursive: true });
run(wasmBindgen, ["--target", "web", "--out-dir", join(pkg, "wasm"), "--out-name", "r2seal_wasm", raw]);

const vectorsPkg = join(root, "pkg-vectors");
const rawVectors = cargoWasm(["--features", "vectors"]);
rmSync(vectorsPkg, { recursive: true, force: true });
run(wasmBindgen, ["--target", "web", "--out-dir", vectorsPkg, "--out-name", "r2seal_wasm", rawVectors]);

const bg = join(pkg, "wasm", "r2seal_wasm_bg.wasm");
const beforeOpt = statSync(bg).size;
const wasmOpt = join(root, "node_modules", ".bin", "wasm-opt");
if (!existsSync(wasmOpt)) throw new Error("wasm-opt missing: run `npm ci` in wasm/ (binaryen)");
// The features rustc enables by default for wasm32-unknown-unknown.
run(wasmOpt, [
  "-Oz",
  "--enable-bulk-memory",
  "--enable-nontrapping-float-to-int",
  "--enable-sign-ext",
  "--enable-mutable-globals",
  "--enable-reference-types",
  "--enable-multivalue",
  bg,
  "-o",
  bg + ".opt",
]);
copyFileSync(bg + ".opt", bg);
rmSync(bg + ".opt");

run(join(root, "node_modules", ".bin", "tsc"), ["-p", join(root, "tsconfig.json")]);

const meta = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
writeFileSync(
  join(pkg, "package.json"),
  JSON.stringify(
    {
      name: meta.name,
      version: meta.version,
      description: meta.description,
      license: meta.license,
      type: "module",
      main: "index.js",
      types: "index.d.ts",
      exports: { ".": { types: "./index.d.ts", default: "./index.js" } },
      sideEffects: false,
    },
    null,
    2,
  ) + "\n",
);

const wasmBytes = readFileSync(bg);
const sizes = {
  wasmBindgen: version,
  rawBytes,
  bindgenBytes: beforeOpt,
  optimizedBytes: wasmBytes.length,
  optimizedGzipBytes: gzipSync(wasmBytes, { level: 9 }).length,
  glueJsBytes: statSync(join(pkg, "wasm", "r2seal_wasm.js")).size,
};
writeFileSync(join(pkg, "sizes.json"), JSON.stringify(sizes, null, 2) + "\n");
console.log(
  `r2seal-wasm built in ${((Date.now() - t0) / 1000).toFixed(1)}s: wasm ${sizes.optimizedBytes} B ` +
    `(${(sizes.optimizedGzipBytes / 1024).toFixed(1)} KiB gzipped; ${sizes.rawBytes} B from rustc, ` +
    `${sizes.bindgenBytes} B after wasm-bindgen)`,
);
