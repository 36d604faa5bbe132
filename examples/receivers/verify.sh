#!/bin/sh
# Verify a clickwire webhook delivery (Standard Webhooks signature) with openssl and base64.
#
#   sh verify.sh SECRET WEBHOOK_ID WEBHOOK_TIMESTAMP WEBHOOK_SIGNATURE BODY_FILE [NOW]
#
# Exit status 0 and "ok" when a v1 signature matches, 1 and the reason otherwise. NOW (seconds since
# the epoch) replaces the clock, to check a recorded delivery. With no arguments it checks the
# Standard Webhooks specification's test vector. BODY_FILE must hold the body exactly as received.
set -eu

if [ "$#" -eq 0 ]; then
  body_file=$(mktemp)
  trap 'rm -f "$body_file"' EXIT
  printf '%s' '{"test": 2432232314}' > "$body_file"
  set -- whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw msg_p5jXN8AQM9LWM0D4loKWxJek 1614265330 \
    'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=' "$body_file" 1614265330
elif [ "$#" -ne 5 ] && [ "$#" -ne 6 ]; then
  echo "usage: sh verify.sh SECRET WEBHOOK_ID WEBHOOK_TIMESTAMP WEBHOOK_SIGNATURE BODY_FILE [NOW]" >&2
  exit 2
fi
secret=$1 id=$2 ts=$3 signatures=$4 body=$5 now=${6:-$(date +%s)}

case $ts in ''|*[!0-9]*) echo "invalid: bad timestamp"; exit 1 ;; esac
age=$((now - ts))
if [ "$age" -gt 300 ] || [ "$age" -lt -300 ]; then
  echo "invalid: timestamp outside the 5-minute window"; exit 1
fi

# The key is the base64 after whsec_, as hex for openssl; the message is "id.timestamp.body".
key_hex=$(printf '%s' "${secret#whsec_}" | base64 -d | od -An -v -tx1 | tr -d ' \n')
expected=$( { printf '%s.%s.' "$id" "$ts"; cat "$body"; } \
  | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$key_hex" -binary | base64)

# During a secret rotation several signatures arrive, space-separated: any one matching is enough.
set -f  # split on spaces only, never expand a glob
for candidate in $signatures; do
  if [ "$candidate" = "v1,$expected" ]; then
    echo ok
    exit 0
  fi
done
echo "invalid: no signature matches this secret"
exit 1
