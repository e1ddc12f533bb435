"""Sends one CloudEvent over HTTP with the CloudEvents Python SDK, as a client of Baton would.

Usage:
    send_cloudevent.py --check
    send_cloudevent.py URL TOKEN MODE ATTRIBUTES DATA

MODE is `structured` or `binary`; ATTRIBUTES and DATA are JSON. Prints the answer as JSON
(`{"status": ..., "body": ...}`) on stdout. `--check` exits 0 when the SDK can be imported.
Works with the SDK's 2.x API (`cloudevents.core`) and with its 1.x one (`cloudevents.http`).
"""

import json
import sys
import urllib.error
import urllib.request


def encode(mode, attributes, data):
    """The headers and body of the event in `mode`."""
    try:
        from cloudevents.core.bindings.http import to_binary_event, to_structured_event
        from cloudevents.core.v1.event import CloudEvent

        event = CloudEvent(attributes, data)
        message = to_structured_event(event) if mode == "structured" else to_binary_event(event)
        return dict(message.headers), message.body
    except ImportError:
        from cloudevents.conversion import to_binary, to_structured
        from cloudevents.http import CloudEvent

        event = CloudEvent(attributes, data)
        return (to_structured if mode == "structured" else to_binary)(event)


def main(argv):
    if argv[1:] == ["--check"]:
        encode("binary", {"type": "check", "source": "/check"}, {})
        return 0
    url, token, mode, attributes, data = argv[1:]
    if mode not in ("structured", "binary"):
        raise SystemExit(f"unknown mode {mode!r}")
    headers, body = encode(mode, json.loads(attributes), json.loads(data))
    if isinstance(body, str):
        body = body.encode()
    request = urllib.request.Request(url, data=body, method="POST")
    for name, value in headers.items():
        request.add_header(name, value)
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, answer = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, answer = error.code, error.read()
    try:
        answer = json.loads(answer)
    except ValueError:
        answer = answer.decode(errors="replace")
    print(json.dumps({"status": status, "body": answer, "sent": {"headers": headers}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
