// Loopback-only @labdigital/commercetools-mock HTTP server for payrules integration tests.
//
//   node scripts/peers/ctmock-server.mjs [PORT]        (or env CTMOCK_PORT; default 8989)
//
// The package has no CLI and its runServer() binds 0.0.0.0, so we build the mock ourselves and call
// ct.app.listen({port, host: "127.0.0.1"}). OAuth is on: API calls need a Bearer token issued by
// POST /oauth/token?grant_type=client_credentials&scope=... (HTTP Basic, any id/secret).
// Env CTMOCK_STRICT=1 turns on zod validation of drafts. No per-request logging (silent: true).
//
// The package is loaded from PAYRULES_PEER_NODE_DIR (default: <repo>/.peers/node), where
// scripts/peers/install.sh installs it. Prints one line "commercetools-mock ready on http://127.0.0.1:PORT".
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const nodeDir = process.env.PAYRULES_PEER_NODE_DIR || resolve(here, "../../.peers/node");

async function importInstalled(name) {
  const pkgDir = join(nodeDir, "node_modules", name);
  let pkg;
  try {
    pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));
  } catch (e) {
    console.error(`ctmock-server: cannot find ${name} under ${nodeDir} (${e.message}); run scripts/peers/install.sh`);
    process.exit(2);
  }
  let entry = pkg.exports?.["."] ?? pkg.module ?? pkg.main;
  while (entry && typeof entry === "object") entry = entry.import ?? entry.default;
  return import(pathToFileURL(join(pkgDir, entry)).href);
}

const port = Number.parseInt(process.argv[2] ?? process.env.CTMOCK_PORT ?? "8989", 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`ctmock-server: invalid port ${process.argv[2] ?? process.env.CTMOCK_PORT}`);
  process.exit(2);
}

const { CommercetoolsMock } = await importInstalled("@labdigital/commercetools-mock");
const ct = new CommercetoolsMock({
  enableAuthentication: true,
  validateCredentials: true,
  silent: true,
  strict: process.env.CTMOCK_STRICT === "1",
});
let closing = false;
for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"]) {
  process.on(sig, () => {
    if (closing) process.exit(0);
    closing = true;
    ct.app.close().finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
try {
  const address = await ct.app.listen({ port, host: "127.0.0.1" });
  console.log(`commercetools-mock ready on ${address}`);
} catch (e) {
  console.error(`ctmock-server: cannot listen on 127.0.0.1:${port}: ${e.message}`);
  process.exit(1);
}
