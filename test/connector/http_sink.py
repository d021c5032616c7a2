#!/usr/bin/env python3
"""A webhook receiver for the connector's tests: answers POSTs on loopback,
failing some on purpose, and records every request it gets.

Usage: http_sink.py PORTFILE LOGFILE [--fail-rate 0.2] [--hang-rate 0.03]
       [--hang-seconds 5] [--seed 1]

It binds a free port and writes it to PORTFILE.  Each request gets, by a
seeded random draw: 500 or 429 (with Retry-After: 0) at --fail-rate, a hang
of --hang-seconds before a 200 at --hang-rate, else 200.  A request whose
Idempotency-Key starts with "reject-" always gets 422.  Every request appends
a line "KEY<TAB>STATUS<TAB>OUTBOX_ID<TAB>BODY_OK" to LOGFILE when it is
answered (STATUS "hang" for one that hung), where BODY_OK says whether the
body was a JSON object with the fields the connector promises."""
import argparse
import json
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FIELDS = ('outbox_id', 'dedupe_key', 'channel', 'profile_id', 'address', 'subject', 'body',
          'body_html', 'payload', 'attempt')

ap = argparse.ArgumentParser()
ap.add_argument('portfile')
ap.add_argument('logfile')
ap.add_argument('--fail-rate', type=float, default=0.2)
ap.add_argument('--hang-rate', type=float, default=0.03)
ap.add_argument('--hang-seconds', type=float, default=5)
ap.add_argument('--seed', type=int, default=1)
args = ap.parse_args()

rng = random.Random(args.seed)
lock = threading.Lock()
log = open(args.logfile, 'a', buffering=1)


def record(key, status, oid, ok):
    with lock:
        log.write('%s\t%s\t%s\t%s\n' % (key, status, oid, 'ok' if ok else 'bad'))


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *a):
        pass

    def answer(self, status, body=b'{}', extra=()):
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get('Content-Length', '0'))
        raw = self.rfile.read(n)
        key = self.headers.get('Idempotency-Key', '')
        oid = self.headers.get('X-PgCdp-Outbox-Id', '')
        try:
            doc = json.loads(raw)
            ok = (isinstance(doc, dict) and all(f in doc for f in FIELDS)
                  and str(doc['outbox_id']) == oid
                  and self.headers.get('Content-Type') == 'application/json')
        except ValueError:
            ok = False
        with lock:
            draw = rng.random()
        if key.startswith('reject-'):
            record(key, 422, oid, ok)
            self.answer(422, b'{"error": "unprocessable"}')
        elif draw < args.fail_rate / 2:
            record(key, 500, oid, ok)
            self.answer(500, b'{"error": "boom"}')
        elif draw < args.fail_rate:
            record(key, 429, oid, ok)
            self.answer(429, b'{"error": "slow down"}', [('Retry-After', '0')])
        elif draw < args.fail_rate + args.hang_rate:
            time.sleep(args.hang_seconds)
            record(key, 'hang', oid, ok)
            try:
                self.answer(200)
            except OSError:
                pass
        else:
            record(key, 200, oid, ok)
            self.answer(200)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


srv = Server(('127.0.0.1', 0), Handler)
with open(args.portfile + '.tmp', 'w') as f:
    f.write(str(srv.server_address[1]))
import os
os.rename(args.portfile + '.tmp', args.portfile)
srv.serve_forever()
