#!/usr/bin/env python3
"""Write a realistic mixed log to stdout: access logs, JSON and plain
application lines, about 1% of them authentication failures or expiry.

Usage: genlog.py SIZE_MIB [SEED]. A block of distinct lines is generated
once and repeated until SIZE_MIB is reached.
"""
import random
import sys

size = int(sys.argv[1]) << 20
rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 1)

paths = ["/api/v1/towns", "/api/v1/towns/%d/houses", "/api/v1/roads/%d", "/healthz",
         "/static/app.%d.js", "/api/v1/users/%d/profile", "/metrics", "/api/auth/login/",
         "/api/v1/search?q=house&page=%d", "/api/token/refresh/"]
agents = ["python-requests/2.32.3", "Mozilla/5.0 (X11; Linux x86_64)", "kube-probe/1.31",
          "Go-http-client/1.1", "okhttp/4.12.0", "curl/8.5.0"]
loggers = ["town_builder.worker", "town_builder.client", "town_builder.cache", "django.server",
           "app.jobs", "app.db"]
verbs = ["GET", "GET", "GET", "POST", "PUT", "DELETE"]
msgs = ["request served", "cache refreshed", "job finished", "connection pool stats",
        "rendered template", "enqueued task", "query executed", "session started"]


def ip():
    return "10.%d.%d.%d" % (rng.randrange(256), rng.randrange(256), rng.randrange(256))


def path():
    p = rng.choice(paths)
    return p % rng.randrange(1, 100000) if "%d" in p else p


def ts(i):
    return "2026-05-02T%02d:%02d:%02d.%03dZ" % (i // 3600 % 24, i // 60 % 60, i % 60, rng.randrange(1000))


def access(i):
    status = rng.choice([200] * 30 + [201, 204, 301, 302, 304, 404, 500])
    return '%s - - [02/May/2026:%02d:%02d:%02d +0000] "%s %s HTTP/1.1" %d %d "-" "%s" rt=%.3f' % (
        ip(), i // 3600 % 24, i // 60 % 60, i % 60, rng.choice(verbs), path(), status,
        rng.randrange(20, 60000), rng.choice(agents), rng.random())


def json_line(i):
    level = rng.choice(["info"] * 12 + ["debug", "debug", "warn", "error"])
    extra = ""
    if level == "error":
        extra = ',"error":"%s"' % rng.choice(["context deadline exceeded", "connection reset by peer",
                                             "pq: duplicate key value violates unique constraint"])
    return ('{"level":"%s","ts":"%s","caller":"server/http.go:%d","msg":"%s","method":"%s",'
            '"path":"%s","status":%d,"bytes":%d,"duration_ms":%.2f,"request_id":"%08x"%s}') % (
        level, ts(i), rng.randrange(20, 400), rng.choice(msgs), rng.choice(verbs), path(),
        rng.choice([200, 200, 200, 201, 404]), rng.randrange(20, 90000), rng.random() * 300,
        rng.randrange(1 << 32), extra)


def plain(i):
    level = rng.choice(["INFO"] * 10 + ["DEBUG", "WARNING", "ERROR"])
    body = rng.choice([
        "built %d houses in town %d" % (rng.randrange(50), rng.randrange(1000)),
        "processed batch %d: %d items in %dms" % (rng.randrange(10**6), rng.randrange(500), rng.randrange(4000)),
        "cache hit ratio %.2f over %d keys" % (rng.random(), rng.randrange(10**5)),
        "database error: connection reset by peer, retrying",
        "worker %d heartbeat ok" % rng.randrange(64),
        "scheduled refresh of town %d in %ds" % (rng.randrange(1000), rng.randrange(600)),
    ])
    if level == "ERROR" and rng.random() < 0.5:
        body = "could not render map: tile %d missing" % rng.randrange(10**6)
    return "2026-05-02 %02d:%02d:%02d,%03d %s %s: %s" % (
        i // 3600 % 24, i // 60 % 60, i % 60, rng.randrange(1000), level, rng.choice(loggers), body)


failures = [
    '{"detail":"Given token not valid for any token type","code":"token_not_valid","messages":[{"token_class":"AccessToken","token_type":"access","message":"Token is expired"}]}',
    "requests.exceptions.HTTPError: 401 Client Error: Unauthorized for url: http://api.iribala:8000/api/v1/towns/",
    "TokenExpiredError: jwt expired",
    'E0502 11:09:03.123456       1 authentication.go:73] "Unable to authenticate the request" err="invalid bearer token"',
    "%s - - [02/May/2026:11:00:10 +0000] \"POST /api/v1/roads/ HTTP/1.1\" 401 58 \"-\" \"python-requests/2.32.3\"",
    "FATAL:  password authentication failed for user \"town\"",
    '{"level":"error","ts":"2026-05-02T11:12:01Z","msg":"list towns","status":401,"error":"unexpected status code 401"}',
    "rpc error: code = Unauthenticated desc = invalid token: token is expired",
]

block = []
for i in range(200000):
    r = rng.random()
    if r < 0.01:
        f = rng.choice(failures)
        line = f % ip() if "%s" in f else f
    elif r < 0.45:
        line = access(i)
    elif r < 0.75:
        line = json_line(i)
    else:
        line = plain(i)
    block.append(line)
data = ("\n".join(block) + "\n").encode()
out = sys.stdout.buffer
written = 0
while written < size:
    chunk = data[: size - written]
    out.write(chunk)
    written += len(chunk)
