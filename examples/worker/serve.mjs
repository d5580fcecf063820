// Serves the example Worker locally in workerd (miniflare), offline, on 127.0.0.1.
// Builds what it needs first: wasm/node_modules (npm ci) and wasm/pkg (the wasm package).
// Local state (R2 objects, the dev keys) lives in .state/ (git-ignored).
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, "..", "..");
const wasm = join(repo, "wasm");
const state = join(here, ".state");

if (!existsSync(join(wasm, "node_modules", "miniflare"))) {
  execFileSync("npm", ["--prefix", wasm, "ci", "--no-audit", "--no-fund"], { stdio: "inherit" });
}
execFileSync(process.execPath, [join(wasm, "scripts", "build.mjs"), "--if-stale"], { stdio: "inherit", cwd: wasm });

const { Miniflare } = await import(pathToFileURL(join(wasm, "node_modules", "miniflare", "dist", "src", "index.js")).href);
const glue = await import(pathToFileURL(join(wasm, "pkg", "wasm", "r2seal_wasm.js")).href);
glue.initSync({ module: new WebAssembly.Module(readFileSync(join(wasm, "pkg", "wasm", "r2seal_wasm_bg.wasm"))) });

// Development keys, made once. In production these are Worker secrets
// (`wrangler secret put R2SEAL_KEY`); the recovery identity stays offline.
mkdirSync(state, { recursive: true });
const keyFile = join(state, "r2seal-key.txt");
const recoveryFile = join(state, "recovery-identity.txt");
if (!existsSync(keyFile)) writeFileSync(keyFile, glue.generateSymKey() + "\n", { mode: 0o600 });
if (!existsSync(recoveryFile)) {
  const [identity, recipient] = glue.generateX25519();
  writeFileSync(recoveryFile, `# recipient: ${recipient}\n${identity}\n`, { mode: 0o600 });
}
const recovery = readFileSync(recoveryFile, "utf8").match(/# recipient: (age1\S+)/)[1];

const port = Number(process.env.PORT ?? 8787);
const mf = new Miniflare({
  host: "127.0.0.1",
  port,
  modules: true,
  scriptPath: join(here, "src", "index.js"),
  modulesRoot: repo,
  modulesRules: [
    { type: "ESModule", include: ["**/*.js"] },
    { type: "CompiledWasm", include: ["**/*.wasm"] },
  ],
  compatibilityDate: "2026-04-01",
  cf: false,
  r2Buckets: ["BUCKET"],
  r2Persist: join(state, "r2"),
  bindings: {
    R2SEAL_KEY: process.env.R2SEAL_KEY ?? readFileSync(keyFile, "utf8").trim(),
    R2SEAL_RECIPIENT_RECOVERY: process.env.R2SEAL_RECIPIENT_RECOVERY ?? recovery,
    R2SEAL_POLICIES: process.env.R2SEAL_POLICIES ?? JSON.stringify({ "archive/": ["recovery"] }),
  },
});
const url = await mf.ready;
console.log(`r2seal example Worker on ${url.href} (state in ${state})`);
console.log(`  curl -X PUT --data-binary @file ${url.href}objects/notes/a.txt`);
console.log(`  curl ${url.href}objects/notes/a.txt`);
const stop = async () => {
  await mf.dispose();
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
