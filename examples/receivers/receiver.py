"""A receiver of payrules' release webhook that verifies every delivery with `standardwebhooks`.

    pip install standardwebhooks
    WEBHOOK_SECRET=whsec_... python3 receiver.py PORT RELEASES.jsonl

Verified deliveries are appended to RELEASES.jsonl (one JSON line: webhook-id and payload) and
answered 204; a missing or wrong signature, or a timestamp more than 5 minutes off, gets 400.
A webhook-id seen before is answered 204 without recording it again (delivery is at least
once). GET answers 200 (a health check). Listens on 127.0.0.1 unless HOST is set.
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

webhook = Webhook(os.environ["WEBHOOK_SECRET"])  # "whsec_<base64>", as configured in payrules
port, out_path = int(sys.argv[1]), sys.argv[2]
seen = set()  # in production: a unique index on the id in your database


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            # The raw body, exactly as received: re-serialized JSON would not verify.
            event = webhook.verify(body, dict(self.headers))
        except WebhookVerificationError as e:
            self.send_response(400)
            self.end_headers()
            self.wfile.write(str(e).encode())
            return
        msg_id = self.headers["webhook-id"]  # = event["key"]
        if msg_id not in seen:
            seen.add(msg_id)
            with open(out_path, "a") as out:
                out.write(json.dumps({"id": msg_id, "event": event}) + "\n")
        self.send_response(204)
        self.end_headers()

    def do_GET(self):
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer((os.environ.get("HOST", "127.0.0.1"), port), Handler).serve_forever()
