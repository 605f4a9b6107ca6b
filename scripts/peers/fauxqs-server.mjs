// Loopback-only fauxqs (SQS/SNS emulator) server for payrules integration tests.
//
//   node scripts/peers/fauxqs-server.mjs [PORT]        (or env FAUXQS_PORT; default 4567)
//
// Why not the fauxqs CLI: the 1.9.2 CLI always binds 0.0.0.0 and logs every request. This wrapper
// builds the same Fastify app (`buildApp`) with the logger off and listens on 127.0.0.1 only.
// Queue URLs are built from the request's Host header (http://127.0.0.1:PORT/000000000000/NAME),
// so always reuse the QueueUrl that CreateQueue/GetQueueUrl returned.
//
// The fauxqs package is loaded from PAYRULES_PEER_NODE_DIR (default: <repo>/.peers/node), where
// scripts/peers/install.sh installs it. Prints one line "fauxqs ready on http://127.0.0.1:PORT".
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const nodeDir = process.env.PAYRULES_PEER_NODE_DIR || resolve(here, "../../.peers/node");

async function importInstalled(name, file) {
  const pkgDir = join(nodeDir, "node_modules", name);
  if (file) return import(pathToFileURL(join(pkgDir, file)).href);
  let pkg;
  try {
    pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));
  } catch (e) {
    console.error(`fauxqs-server: cannot find ${name} under ${nodeDir} (${e.message}); run scripts/peers/install.sh`);
    process.exit(2);
  }
  let entry = pkg.exports?.["."] ?? pkg.module ?? pkg.main;
  while (entry && typeof entry === "object") entry = entry.import ?? entry.default;
  return import(pathToFileURL(join(pkgDir, entry)).href);
}

const port = Number.parseInt(process.argv[2] ?? process.env.FAUXQS_PORT ?? "4567", 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`fauxqs-server: invalid port ${process.argv[2] ?? process.env.FAUXQS_PORT}`);
  process.exit(2);
}

const { buildApp } = await importInstalled("fauxqs");
// fauxqs' SqsStore defaults `host` to "localhost" and then builds queue URLs as
// http://sqs.<region>.localhost:PORT/...; with an empty host it uses the request's Host header
// instead. The stores are not exported, so load them by file (same module instances as app.js).
const { SqsStore } = await importInstalled("fauxqs", "dist/sqs/sqsStore.js");
const { SnsStore } = await importInstalled("fauxqs", "dist/sns/snsStore.js");
const { S3Store } = await importInstalled("fauxqs", "dist/s3/s3Store.js");
const sqsStore = new SqsStore();
sqsStore.host = "";
const app = buildApp({
  logger: false,
  stores: { sqsStore, snsStore: new SnsStore(), s3Store: new S3Store() },
});
let closing = false;
for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"]) {
  process.on(sig, () => {
    if (closing) process.exit(0);
    closing = true;
    app.close().finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
try {
  const address = await app.listen({ port, host: "127.0.0.1" });
  console.log(`fauxqs ready on ${address}`);
} catch (e) {
  console.error(`fauxqs-server: cannot listen on 127.0.0.1:${port}: ${e.message}`);
  process.exit(1);
}
