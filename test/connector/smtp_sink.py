#!/usr/bin/env python3
"""An SMTP server for the connector's tests (aiosmtpd, on loopback): it
records every message it accepts and refuses some recipients.

Usage: smtp_sink.py PORT LOGFILE

A recipient starting with "bounce" gets "550 5.1.1 no such mailbox", one
starting with "busy" gets "451 4.3.0 try again later"; every other message
is parsed as MIME and appended to LOGFILE as a JSON line: outbox_id (the
X-PgCdp-Outbox-Id header), message_id, to, from, subject (decoded), text,
html (decoded parts or null), crlf (every line ended by CRLF in the DATA)."""
import email
import email.policy
import json
import sys
import threading
import time

from aiosmtpd.controller import Controller

port = int(sys.argv[1])
log = open(sys.argv[2], 'a', buffering=1, encoding='utf-8')
lock = threading.Lock()


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith('bounce'):
            return '550 5.1.1 no such mailbox'
        if address.startswith('busy'):
            return '451 4.3.0 try again later'
        envelope.rcpt_tos.append(address)
        return '250 OK'

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        text = html = None
        for part in msg.walk():
            ct = part.get_content_type()
            if ct == 'text/plain' and text is None:
                text = part.get_content()
            elif ct == 'text/html' and html is None:
                html = part.get_content()
        body = raw.split(b'\r\n\r\n', 1)
        lines = raw.split(b'\n')
        crlf = all(l.endswith(b'\r') for l in lines[:-1])
        rec = {'outbox_id': msg.get('X-PgCdp-Outbox-Id'), 'message_id': msg.get('Message-ID'),
               'to': envelope.rcpt_tos, 'from': str(msg.get('From')), 'subject': str(msg.get('Subject')),
               'multipart': msg.get_content_type(), 'text': text, 'html': html, 'crlf': crlf}
        with lock:
            log.write(json.dumps(rec, ensure_ascii=False) + '\n')
        return '250 OK queued'


ctl = Controller(Handler(), hostname='127.0.0.1', port=port, decode_data=False)
ctl.start()
try:
    while True:
        time.sleep(3600)
finally:
    ctl.stop()
