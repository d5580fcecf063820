// Runs the r2seal Worker package inside workerd (miniflare, offline: cf: false) against
// an in-memory R2 bucket. Every test body runs in the Worker (test/worker.js); this file
// starts it, feeds it the shared vector files, and plays the native CLI's side of the
// cross-implementation tests.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Miniflare } from "miniflare";
import { initSync, generateSymKey, generateX25519 } from "../pkg/wasm/r2seal_wasm.js";

const here = dirname(fileURLToPath(import.meta.url));
const wasmRoot = join(here, "..");
const repo = join(wasmRoot, "..");
const pkgSizes = JSON.parse(readFileSync(join(wasmRoot, "pkg", "sizes.json"), "utf8"));

initSync({ module: new WebAssembly.Module(readFileSync(join(wasmRoot, "pkg", "wasm", "r2seal_wasm_bg.wasm"))) });
const symKey = generateSymKey();
const otherKey = generateSymKey();
const [recoveryIdentity, recoveryRecipient] = generateX25519();

const report = {};
let mf;
let tmp;

function workerdPids() {
  // miniflare spawns workerd as a child of this process.
  const pids = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      if (ppid === process.pid && comm.startsWith("workerd")) pids.push(Number(entry));
    } catch {
      // gone
    }
  }
  return pids;
}

function memoryOf(pid) {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (field) => Number(status.match(new RegExp(`${field}:\\s+(\\d+) kB`))?.[1] ?? NaN);
  return { rssKiB: kib("VmRSS"), hwmKiB: kib("VmHWM") };
}

async function call(path, init) {
  const res = await mf.dispatchFetch(`http://localhost${path}`, init);
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`${path}: ${res.status} ${text.slice(0, 500)}`);
  }
  return body;
}

async function runInWorker(name, query = "") {
  const body = await call(`/t/${name}${query}`, { method: "POST" });
  assert.equal(body.ok, true, `${name}: ${body.error}\n${body.stack ?? ""}`);
  return body;
}

function nativeCli() {
  if (process.env.R2SEAL_BIN) return process.env.R2SEAL_BIN;
  // Build the native CLI from the root crate (debug; CARGO_TARGET_DIR is honoured).
  execFileSync("cargo", ["build", "--locked", "--bin", "r2seal", "-j", "2"], { cwd: repo, stdio: "inherit" });
  const target = process.env.CARGO_TARGET_DIR || join(repo, "target");
  return join(target, "debug", "r2seal");
}

/** A module Worker in workerd with an in-memory R2 bucket bound as BUCKET. */
function workerd(scriptPath, modulesRoot, bindings) {
  return new Miniflare({
    modules: true,
    scriptPath,
    modulesRoot,
    modulesRules: [
      { type: "ESModule", include: ["**/*.js"] },
      { type: "CompiledWasm", include: ["**/*.wasm"] },
    ],
    compatibilityDate: "2026-04-01",
    cf: false,
    r2Buckets: ["BUCKET"],
    r2Persist: false,
    bindings,
  });
}

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), "r2seal-wasm-test-"));
  mf = workerd(join(here, "worker.js"), wasmRoot, {
    R2SEAL_KEY: symKey,
    R2SEAL_RECIPIENT_RECOVERY: recoveryRecipient,
    R2SEAL_POLICIES: JSON.stringify({ "archive/": ["recovery"] }),
    OTHER_KEY: otherKey,
  });
  await mf.ready;
});

after(async () => {
  await mf?.dispose();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  console.log(`# r2seal-wasm measurements: ${JSON.stringify(report)}`);
});

describe("SealedBucket in workerd", () => {
  for (const name of [
    "roundtrip_empty",
    "roundtrip_json",
    "roundtrip_multichunk",
    "multipart",
    "ranges",
    "list_head_delete",
    "policies",
    "allow_plaintext",
    "tampered",
    "names",
    "descriptor",
    "bad_input",
    "secrets",
    "unfinished_upload",
    "json_errors",
    "names_list_paging",
    "range_race",
    "env_variables",
    "metadata_local_limit",
    "descriptor_create_only",
    "body_not_consumed",
    "getjson_precondition",
    "reserved_delete",
    "conditional_big_put",
    "range_arguments",
    "range_calls",
  ]) {
    test(name, async () => {
      await runInWorker(name);
    });
  }
});

describe("shared known-answer vectors (tests/vectors) through the wasm build", () => {
  const dir = join(repo, "tests", "vectors");
  const files = readdirSync(dir, { withFileTypes: true })
    .filter((f) => f.isFile() && f.name !== "README.md")
    .map((f) => f.name)
    .sort();
  const namesDir = join(dir, "names");
  const nameFiles = readdirSync(namesDir).sort();

  test("every name-encryption vector (tests/vectors/names) passes in wasm", async () => {
    assert.ok(nameFiles.length >= 12, `only ${nameFiles.length} name vectors`);
    const failures = [];
    for (const f of nameFiles) {
      const body = await call("/name-vector", { method: "POST", body: readFileSync(join(namesDir, f)) });
      if (!body.ok) failures.push(`${f}: ${body.error}`);
    }
    report.nameVectors = nameFiles.length;
    assert.deepEqual(failures, [], `${failures.length} of ${nameFiles.length} name vectors failed`);
    const edited = readFileSync(join(namesDir, nameFiles[0]), "latin1").replace("expect: ", "expect: x");
    assert.equal((await call("/name-vector", { method: "POST", body: Buffer.from(edited, "latin1") })).ok, false);
  });

  test("there are vectors to run", () => {
    assert.ok(files.length >= 40, `only ${files.length} vector files`);
  });

  test("every vector passes r2seal::testkit::check in wasm", async () => {
    const failures = [];
    for (const f of files) {
      const body = await call("/vector", { method: "POST", body: readFileSync(join(dir, f)) });
      if (!body.ok) failures.push(`${f}: ${body.error}`);
    }
    report.vectors = files.length;
    assert.deepEqual(failures, [], `${failures.length} of ${files.length} vectors failed`);
  });

  test("the checker fails on an edited expectation", async () => {
    const f = files.find((n) => n.startsWith("success_"));
    const bytes = readFileSync(join(dir, f));
    const text = bytes.toString("latin1").replace("expect: success", "expect: corrupt");
    const body = await call("/vector", { method: "POST", body: Buffer.from(text, "latin1") });
    assert.equal(body.ok, false, "an edited vector must fail");
    assert.equal(body.code, "VECTOR_FAILED");
  });
});

describe("cross-implementation with the native CLI", () => {
  let cli;
  let symFile;
  let recoveryFile;
  before(() => {
    cli = nativeCli();
    assert.ok(existsSync(cli), `native CLI at ${cli}`);
    symFile = join(tmp, "sym.key");
    recoveryFile = join(tmp, "recovery.key");
    writeFileSync(symFile, symKey + "\n", { mode: 0o600 });
    writeFileSync(recoveryFile, recoveryIdentity + "\n", { mode: 0o600 });
  });

  const sizes = [0, 4096, 3 * 65536 + 77];

  test("sealed in the Worker, opened by `r2seal open`", async () => {
    for (const n of sizes) {
      const key = `cross/worker-${n}.bin`;
      const data = Buffer.alloc(n);
      for (let i = 0; i < n; i++) data[i] = (i * 31 + n) & 0xff;
      assert.equal((await call(`/put?key=${encodeURIComponent(key)}`, { method: "PUT", body: data, headers: { "content-length": String(n) } })).ok, true);
      const file = Buffer.from(await (await mf.dispatchFetch(`http://localhost/raw/export?key=${encodeURIComponent(key)}`)).arrayBuffer());
      const sealedPath = join(tmp, `w-${n}.age`);
      const outPath = join(tmp, `w-${n}.out`);
      writeFileSync(sealedPath, file);
      execFileSync(cli, ["open", "-i", symFile, "--name", key, "-o", outPath, sealedPath]);
      assert.ok(readFileSync(outPath).equals(data), `native open of ${n} bytes`);
      // The recovery identity (held offline) opens it too; the wrong name does not.
      execFileSync(cli, ["open", "-i", recoveryFile, "--name", key, "-o", outPath + ".r", sealedPath]);
      assert.ok(readFileSync(outPath + ".r").equals(data), "recovery key opens");
      assert.throws(() => execFileSync(cli, ["open", "-i", symFile, "--name", key + "x", sealedPath], { stdio: "pipe" }));
    }
  });

  test("a write-only prefix: the Worker cannot read it, the offline key can", async () => {
    const body = await runInWorker("policies");
    assert.equal(body.ok, true);
    const file = Buffer.from(await (await mf.dispatchFetch(`http://localhost/raw/export?key=${encodeURIComponent("archive/2026/x")}`)).arrayBuffer());
    const sealedPath = join(tmp, "archive.age");
    writeFileSync(sealedPath, file);
    assert.throws(() => execFileSync(cli, ["open", "-i", symFile, "--name", "archive/2026/x", sealedPath], { stdio: "pipe" }), "the Worker's key cannot open it");
    const out = execFileSync(cli, ["open", "-i", recoveryFile, "--name", "archive/2026/x", sealedPath]);
    assert.deepEqual(JSON.parse(out.toString()), { secret: "for the recovery key only" });
  });

  test("a descriptor from `r2seal bucket init` admits the Worker with the same keys, and only it", async () => {
    // The native keyring mirrors the Worker's env: main (R2SEAL_KEY), recovery (a
    // write-only recipient), archive/ -> recovery, names under main.
    const ring = join(tmp, "descriptor-keyring.toml");
    const env = { ...process.env, R2SEAL_KEYRING: ring };
    delete env.R2SEAL_PASSPHRASE;
    const run = (args) => execFileSync(cli, args, { env, stdio: "pipe" });
    run(["key", "add", "main", "--import", symFile]);
    run(["key", "add", "recovery", "--recipient", recoveryRecipient, "--recovery"]);
    run(["key", "policy", "archive/", "recovery"]);
    run(["key", "names", "main"]);
    const dir = join(tmp, "descriptor-bucket");
    mkdirSync(dir);
    run(["bucket", "init", `file://${dir}`]);
    const descriptor = readFileSync(join(dir, ".r2seal", "descriptor"));
    const stored = await call(`/raw/put?key=${encodeURIComponent(".r2seal/descriptor")}`, { method: "POST", body: descriptor });
    assert.equal(stored.ok, true);
    try {
      const body = await runInWorker("descriptor_from_cli");
      assert.equal(body.ok, true);
    } finally {
      await call(`/raw/delete?key=${encodeURIComponent(".r2seal/descriptor")}`, { method: "POST" });
    }
  });

  test("sealed by `r2seal seal`, opened in the Worker", async () => {
    for (const n of sizes) {
      const key = `cross/native-${n}.bin`;
      const data = Buffer.alloc(n);
      for (let i = 0; i < n; i++) data[i] = (i * 17 + 3) & 0xff;
      const inPath = join(tmp, `n-${n}.in`);
      const sealedPath = join(tmp, `n-${n}.age`);
      writeFileSync(inPath, data);
      execFileSync(cli, ["seal", "-i", symFile, "--name", key, "-o", sealedPath, inPath]);
      const imported = await call(`/raw/import?key=${encodeURIComponent(key)}`, { method: "POST", body: readFileSync(sealedPath) });
      assert.equal(imported.ok, true);
      const res = await mf.dispatchFetch(`http://localhost/get?key=${encodeURIComponent(key)}`);
      assert.equal(res.status, 200, await res.clone().text());
      assert.ok(Buffer.from(await res.arrayBuffer()).equals(data), `Worker opens native ${n} bytes`);
    }
  });
});

describe("the package as a Worker project uses it", () => {
  test("`npm pack` ships the built code its manifest points at", () => {
    // --ignore-scripts: pretest built pkg/ already; prepack would only re-check it.
    const [packed] = JSON.parse(execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: wasmRoot, encoding: "utf8" }));
    const files = new Set(packed.files.map((f) => f.path));
    const manifest = JSON.parse(readFileSync(join(wasmRoot, "package.json"), "utf8"));
    const pointed = [manifest.main, manifest.types, manifest.exports["."].types, manifest.exports["."].default].map((f) => f.replace(/^\.\//, ""));
    for (const f of [...pointed, "pkg/core.js", "pkg/bucket.js", "pkg/errors.js", "pkg/wasm/r2seal_wasm.js", "pkg/wasm/r2seal_wasm_bg.wasm"]) {
      assert.ok(files.has(f), `${f} in the package (${[...files].join(", ")})`);
    }
    assert.ok(![...files].some((f) => f.startsWith("src/") || f.startsWith("test/") || f.startsWith("pkg-vectors/")), "no sources, tests or the test-only vectors build");
  });

  test("README's Worker sample type-checks against the package, with a wrangler-style `interface Env`", () => {
    const readme = readFileSync(join(repo, "README.md"), "utf8");
    const section = readme.slice(readme.indexOf("\n## Workers\n"));
    const sample = section.match(/```ts\n([\s\S]*?)```/)?.[1];
    assert.ok(sample && sample.includes("interface Env") && sample.includes("SealedBucket.fromEnv"), "the sample is in README's Workers section");
    // Resolved as a Worker project resolves it: node_modules/r2seal-wasm → wasm/ (what
    // `npm install /path/to/r2seal/wasm` makes), through its package.json exports.
    const dir = join(here, ".types");
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(join(dir, "node_modules"), { recursive: true });
    try {
      symlinkSync(wasmRoot, join(dir, "node_modules", "r2seal-wasm"), "dir");
      writeFileSync(join(dir, "readme-sample.ts"), sample);
      writeFileSync(
        join(dir, "tsconfig.json"),
        JSON.stringify({
          compilerOptions: {
            target: "ES2022",
            module: "ES2022",
            moduleResolution: "Bundler",
            lib: ["ES2022"],
            types: ["@cloudflare/workers-types"],
            strict: true,
            noEmit: true,
            skipLibCheck: true,
          },
          files: ["readme-sample.ts"],
        }),
      );
      const tsc = join(wasmRoot, "node_modules", ".bin", "tsc");
      try {
        execFileSync(tsc, ["-p", join(dir, "tsconfig.json")], { encoding: "utf8", stdio: "pipe" });
      } catch (e) {
        assert.fail(`tsc on README's sample:\n${e.stdout}${e.stderr}`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("the example Worker: a malformed percent-escape is a 400, a tampered header a 502", async () => {
    const example = workerd(join(repo, "examples", "worker", "src", "index.js"), repo, { R2SEAL_KEY: symKey });
    try {
      const bad = await example.dispatchFetch("http://localhost/objects/%E0%A4%A");
      assert.equal(bad.status, 400, await bad.clone().text());
      assert.equal((await bad.json()).error, "INVALID_ARGUMENT");
      const put = await example.dispatchFetch("http://localhost/objects/a%20b.txt", { method: "PUT", body: "hello" });
      assert.equal(put.status, 201, await put.clone().text());
      assert.equal(await (await example.dispatchFetch("http://localhost/objects/a%20b.txt")).text(), "hello");
      const bucket = await example.getR2Bucket("BUCKET");
      await bucket.put("t.txt", "x", { customMetadata: { r2seal: "garbage" } });
      const tampered = await example.dispatchFetch("http://localhost/objects/t.txt");
      assert.equal(tampered.status, 502, await tampered.clone().text());
      assert.equal((await tampered.json()).error, "MALFORMED");
    } finally {
      await example.dispose();
    }
  });
});

describe("measurements", () => {
  test("wasm module size within budget (≤ 250 KiB gzipped after wasm-opt -Oz)", () => {
    report.wasmBytes = pkgSizes.optimizedBytes;
    report.wasmGzipBytes = pkgSizes.optimizedGzipBytes;
    report.wasmRawFromRustc = pkgSizes.rawBytes;
    assert.ok(pkgSizes.optimizedGzipBytes <= 250 * 1024, `${pkgSizes.optimizedGzipBytes} bytes gzipped`);
  });

  // Measured and reported (the README's figures), never asserted: speed goals live in
  // benchmarks, not in tests that a busy machine can fail. The round trips are checked.
  test("seal+open of a 4 KiB JSON object in workerd: round trips, CPU per operation measured", async () => {
    // CPU time of the workerd process (utime + stime from /proc, 10 ms ticks), not wall
    // time: other work on the machine does not count. Baseline: the same request with
    // n=0, so the per-request dispatch cost cancels out.
    const pids = workerdPids();
    assert.ok(pids.length > 0, "workerd process found");
    const cpuMs = () =>
      pids.reduce((sum, pid) => {
        const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
        const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        return sum + (Number(fields[11]) + Number(fields[12])) * 10; // CLK_TCK = 100
      }, 0);
    const cpu = async (q, repeat = 1) => {
      const t = cpuMs();
      for (let i = 0; i < repeat; i++) await runInWorker("bench", q);
      return cpuMs() - t;
    };
    await cpu("?n=20"); // warm up
    const n = 1000;
    const base = await cpu("?n=0", 20);
    const full = await cpu(`?n=${n}`);
    const perOp = (full - base / 20) / n;
    report.sealOpen4KiBcpuMs = Number(perOp.toFixed(3));
    const sym = await cpu(`?n=${n}&symOnly`);
    report.sealOpen4KiBsymOnlyCpuMs = Number(((sym - base / 20) / n).toFixed(3));
    // Through the R2 binding too: wall time, includes miniflare's local R2 I/O.
    const r2n = 50;
    const t = process.hrtime.bigint();
    await runInWorker("bench_r2", `?n=${r2n}`);
    report.putJsonGetJson4KiBviaR2WallMs = Number((Number(process.hrtime.bigint() - t) / 1e6 / r2n).toFixed(3));
    assert.ok(Number.isFinite(perOp), "a CPU figure from /proc");
  });

  test("a 50 MiB object streams through with bounded memory", async () => {
    const pids = workerdPids();
    const before = pids.map(memoryOf);
    const body = await runInWorker("big", "?mb=50");
    const afterMem = pids.map(memoryOf);
    report.big = {
      mib: body.total / 1024 / 1024,
      wasmMemoryBytes: body.wasmMemoryAfterGet,
      workerdRssKiBBefore: before.map((m) => m.rssKiB),
      workerdRssKiBAfter: afterMem.map((m) => m.rssKiB),
      workerdPeakRssKiB: afterMem.map((m) => m.hwmKiB),
    };
    assert.ok(body.wasmMemoryAfterGet < 16 * 1024 * 1024);
  });
});
