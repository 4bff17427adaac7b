#!/usr/bin/env python3
"""Talk to a running `pacer mock` (loopback only, standard library only).

  mockctl.py stats URL                      print GET /mock/stats (JSON)
  mockctl.py wait-requests URL N TIMEOUT_S  poll /mock/stats until requests > N;
                                            print the seconds waited (monotonic)
  mockctl.py first-after URL SEQ            print the first /mock/log entry with
                                            seq >= SEQ (JSON), or nothing

URL is the mock's root, e.g. http://127.0.0.1:40123 (no /v1).
"""
import json
import sys
import time
import urllib.request


def get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def main():
    cmd, url = sys.argv[1], sys.argv[2].rstrip("/")
    if not url.startswith("http://127.0.0.1:"):
        sys.exit("mockctl: loopback URLs only")
    if cmd == "stats":
        print(json.dumps(get(url + "/mock/stats")))
    elif cmd == "wait-requests":
        n, limit = int(sys.argv[3]), float(sys.argv[4])
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:  # bounded
            if get(url + "/mock/stats")["requests"] > n:
                print(f"{time.monotonic() - t0:.3f}")
                return
            time.sleep(0.002)
        sys.exit(f"mockctl: no request beyond {n} within {limit}s")
    elif cmd == "first-after":
        seq = int(sys.argv[3])
        rows = get(f"{url}/mock/log?since={seq}&limit=1")
        if rows:
            print(json.dumps(rows[0]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
