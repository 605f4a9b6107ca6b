// A receiver of payrules' release webhook that verifies every delivery with `standardwebhooks`.
//
//   npm install standardwebhooks
//   WEBHOOK_SECRET=whsec_... node receiver.cjs PORT RELEASES.jsonl
//
// Verified deliveries are appended to RELEASES.jsonl (one JSON line: webhook-id and payload) and
// answered 204; a missing or wrong signature, or a timestamp more than 5 minutes off, gets 400.
// A webhook-id seen before is answered 204 without recording it again (delivery is at least
// once). GET answers 200 (a health check). Listens on 127.0.0.1 unless HOST is set.
const fs = require("node:fs");
const http = require("node:http");
const { Webhook } = require("standardwebhooks");

const webhook = new Webhook(process.env.WEBHOOK_SECRET); // "whsec_<base64>", as configured in payrules
const [port, outPath] = [Number(process.argv[2]), process.argv[3]];
const seen = new Set(); // in production: a unique index on the id in your database

http
  .createServer((req, res) => {
    if (req.method !== "POST") return res.writeHead(200).end();
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      // The raw body, exactly as received: re-serialized JSON would not verify.
      const body = Buffer.concat(chunks).toString("utf8");
      let event;
      try {
        event = webhook.verify(body, req.headers);
      } catch (e) {
        return res.writeHead(400).end(String(e.message));
      }
      const id = req.headers["webhook-id"]; // = event.key
      if (!seen.has(id)) {
        seen.add(id);
        fs.appendFileSync(outPath, JSON.stringify({ id, event }) + "\n");
      }
      res.writeHead(204).end();
    });
  })
  .listen(port, process.env.HOST || "127.0.0.1");
