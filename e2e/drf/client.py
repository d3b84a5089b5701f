#!/usr/bin/env python3
"""town-builder: calls the iribala API with the token from its environment
and logs each call the way the real service does.

Environment: API_URL (the towns endpoint), TOWN_API_JWT_TOKEN (the token),
AUTH_SCHEME (Bearer for a SimpleJWT access token, Token for a DRF key),
INTERVAL (seconds between calls, default 0.2).
"""
import os
import sys
import time
import urllib.error
import urllib.request

url = os.environ["API_URL"]
token = os.environ.get("TOWN_API_JWT_TOKEN", "")
scheme = os.environ.get("AUTH_SCHEME", "Bearer")
interval = float(os.environ.get("INTERVAL", "0.2"))
ok_logged = 0

while True:
    request = urllib.request.Request(url, headers={"Authorization": f"{scheme} {token}", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()
            # One line per 10 successes keeps the log readable.
            if ok_logged % 10 == 0:
                print(f"INFO town-builder: GET {url} returned {response.status} {response.reason}", flush=True)
            ok_logged += 1
    except urllib.error.HTTPError as e:
        body = e.read().decode("utf-8", "replace")
        print(f"ERROR town-builder: GET {url} returned {e.code} {e.reason}: {body}", flush=True)
    except OSError as e:
        print(f"ERROR town-builder: GET {url} failed: {e}", file=sys.stderr, flush=True)
    time.sleep(interval)
