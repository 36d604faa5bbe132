#!/usr/bin/env node
// Verify a clickwire webhook delivery (Standard Webhooks signature) with Node's built-in crypto.
//
//   node verify.mjs SECRET WEBHOOK_ID WEBHOOK_TIMESTAMP WEBHOOK_SIGNATURE BODY_FILE [NOW]
//
// Exit status 0 and "ok" when a v1 signature matches, 1 and the reason otherwise. NOW (seconds since
// the epoch) replaces the clock, to check a recorded delivery. With no arguments it checks the
// Standard Webhooks specification's test vector.
//
// In a receiver, pass the raw body (express.raw({type: "application/json"}), not express.json()):
// re-serialized JSON does not carry the same bytes, so its signature never matches.
import { createHmac, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";

const TOLERANCE_S = 300;

export function verify(secret, headers, body, now = Date.now() / 1000) {
  const h = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
  const id = h["webhook-id"], ts = h["webhook-timestamp"], signatures = h["webhook-signature"];
  if (!id || !ts || !signatures) throw new Error("missing webhook-id, webhook-timestamp or webhook-signature");
  if (!/^\d+$/.test(ts)) throw new Error("bad timestamp");
  if (Math.abs(now - Number(ts)) > TOLERANCE_S) throw new Error("timestamp outside the 5-minute window");
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  const expected = createHmac("sha256", key)
    .update(Buffer.concat([Buffer.from(`${id}.${ts}.`), Buffer.from(body)]))
    .digest();
  // During a secret rotation several signatures arrive, space-separated: any one matching is enough.
  for (const candidate of signatures.split(" ")) {
    const [version, value] = candidate.split(",", 2);
    if (version !== "v1" || !value) continue;
    const given = Buffer.from(value, "base64");
    if (given.length === expected.length && timingSafeEqual(given, expected)) return;
  }
  throw new Error("no signature matches this secret");
}

function main(argv) {
  let body;
  if (argv.length === 0) {
    argv = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", "-", "1614265330"];
    body = Buffer.from('{"test": 2432232314}');
  } else if (argv.length === 5 || argv.length === 6) {
    body = readFileSync(argv[4]);
  } else {
    console.error("node verify.mjs SECRET WEBHOOK_ID WEBHOOK_TIMESTAMP WEBHOOK_SIGNATURE BODY_FILE [NOW]");
    return 2;
  }
  const [secret, id, ts, signature] = argv;
  try {
    verify(secret, { "webhook-id": id, "webhook-timestamp": ts, "webhook-signature": signature }, body,
           argv.length === 6 ? Number(argv[5]) : undefined);
  } catch (err) {
    console.log(`invalid: ${err.message}`);
    return 1;
  }
  console.log("ok");
  return 0;
}

process.exitCode = main(process.argv.slice(2));
