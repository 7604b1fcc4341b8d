#!/usr/bin/env python3
"""The admin dashboard in a real browser: a seeded `tidesync serve` on loopback, /admin in
headless Chromium (driven over the DevTools protocol with only the standard library).

Checks: /admin refuses without the admin token (HTTP 401, and the browser shows the login
form and none of the data); signing in through the form opens the page; the page shows the
seeded spaces, clients and rejections, a hostile user name as text, and live push/pull rates
from its script (so the Content-Security-Policy lets it run); signing out ends the session.
Keeps a full-page screenshot.

    python3 crates/tidesync-cli/tests/browser/admin_dashboard.py \
        --tidesync target/debug/tidesync --screenshot target/ci-artifacts/admin.png
"""

import argparse
import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ADMIN_TOKEN = "ci-admin-" + os.urandom(16).hex()
HOSTILE_USER = '<b id="pwned">eve</b>'


def fail(message):
    sys.exit(f"FAIL: {message}")


def wait_for(what, check, timeout=20.0, every=0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            fail(f"timed out waiting for {what}")
        time.sleep(every)


# --- the server --------------------------------------------------------------------------


class Server:
    def __init__(self, tidesync, data_dir):
        self.tidesync = tidesync
        self.data_dir = data_dir
        self.process = None
        self.base = None

    def token(self, user, space):
        out = subprocess.run(
            [self.tidesync, "token", "create", "--data-dir", self.data_dir,
             "--user", user, "--space", space],
            check=True, capture_output=True, text=True,
        ).stdout
        return next(line for line in out.splitlines() if line.startswith("tsk_"))

    def start(self):
        env = dict(os.environ, TIDESYNC_ADMIN_TOKEN=ADMIN_TOKEN)
        self.process = subprocess.Popen(
            [self.tidesync, "serve", "--data-dir", self.data_dir, "--listen", "127.0.0.1:0",
             "--policy", "notes=strict"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )
        line = self.process.stdout.readline()
        prefix = "tidesync listening on "
        if not line.startswith(prefix):
            fail(f"unexpected first line from tidesync serve: {line!r}")
        self.base = line[len(prefix):].strip()
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def request(self, method, path, body=None, token=None, headers=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def push(self, token, client, mutations):
        status, text = self.request(
            "POST", "/v1/push", {"client_id": client, "protocol": 1, "mutations": mutations}, token)
        if status != 200:
            fail(f"push by {client}: {status} {text}")
        return json.loads(text)

    def pull(self, token, client, spaces):
        status, text = self.request(
            "POST", "/v1/pull",
            {"client_id": client, "protocol": 1, "spaces": spaces, "limit": 1000}, token)
        if status != 200:
            fail(f"pull by {client}: {status} {text}")


def hlc(counter):
    return format((int(time.time() * 1000) << 16) | counter, "016x")


def mutation(seq, space, collection, record, kind="put", doc=None, base=0):
    m = {"seq": seq, "tx": seq, "space": space, "collection": collection, "id": record,
         "kind": kind, "hlc": hlc(seq), "base_version": base}
    if kind != "delete":
        m["doc"] = doc or {}
    return m


def seed(server):
    alice = server.token("alice", "user:alice")
    bob = server.token("bob", "team:rockets")
    eve = server.token(HOSTILE_USER, "user:eve")
    server.push(alice, "alice-phone", [
        mutation(1, "user:alice", "todos", "t1", doc={"title": "milk"}),
        mutation(2, "user:alice", "todos", "t2", doc={"title": "eggs"}),
        mutation(3, "user:alice", "todos", "t3", doc={"title": "tea"}),
        mutation(4, "user:alice", "todos", "t1", kind="delete"),
        # A base version the space never had: rejected with base_ahead.
        mutation(5, "user:alice", "todos", "t4", doc={"title": "from the future"}, base=999),
    ])
    server.push(bob, "bob-laptop", [
        mutation(1, "team:rockets", "notes", "n1", doc={"text": "launch"}),
        mutation(2, "team:rockets", "notes", "n1", doc={"text": "go"}, base=1),
    ])
    # The strict policy refuses a write on an outdated base.
    answer = server.push(bob, "bob-phone", [
        mutation(1, "team:rockets", "notes", "n1", doc={"text": "stale"}, base=1),
    ])
    if answer["results"][0]["outcome"] != "rejected":
        fail(f"expected a stale_base rejection: {answer}")
    server.push(eve, "eve-tablet", [mutation(1, "user:eve", "todos", "e1", doc={})])
    server.pull(bob, "bob-laptop", ["team:rockets"])
    server.pull(bob, "bob-watch", ["team:rockets"])  # only pulls: no stored client row
    return alice


# --- the browser (Chrome DevTools protocol over a WebSocket, standard library only) -------


class WebSocket:
    def __init__(self, url):
        assert url.startswith("ws://")
        host_port, path = url[len("ws://"):].split("/", 1)
        host, port = host_port.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                fail("the browser closed the DevTools connection during the handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            fail(f"DevTools handshake refused: {head[:200]!r}")
        self.buffer = head.split(b"\r\n\r\n", 1)[1]

    def send(self, text):
        payload = text.encode()
        header = bytearray([0x81])
        if len(payload) < 126:
            header.append(0x80 | len(payload))
        elif len(payload) < 1 << 16:
            header.append(0x80 | 126)
            header += struct.pack(">H", len(payload))
        else:
            header.append(0x80 | 127)
            header += struct.pack(">Q", len(payload))
        mask = os.urandom(4)
        header += mask
        self.sock.sendall(bytes(header) + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _read(self, n):
        while len(self.buffer) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                fail("the browser closed the DevTools connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def receive(self):
        message = b""
        while True:
            first, second = self._read(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(length)
            opcode = first & 0x0F
            if opcode == 0x9:  # ping
                continue
            if opcode == 0x8:
                fail("the browser closed the DevTools connection")
            message += payload
            if first & 0x80:
                return message.decode()


class Browser:
    def __init__(self, chromium, profile):
        self.process = subprocess.Popen(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
             "--hide-scrollbars", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", f"--user-data-dir={profile}",
             "--window-size=1280,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        port_file = os.path.join(profile, "DevToolsActivePort")
        wait_for("Chromium's DevTools port", lambda: os.path.exists(port_file)
                 and open(port_file).read().count("\n") >= 1)
        port = int(open(port_file).read().split("\n")[0])
        targets = wait_for("a page target", lambda: [
            t for t in json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
            if t.get("type") == "page"])
        self.ws = WebSocket(targets[0]["webSocketDebuggerUrl"])
        self.next_id = 0
        self.console = []
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Log.enable")

    def call(self, method, **params):
        self.next_id += 1
        ident = self.next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.receive())
            if message.get("id") == ident:
                if "error" in message:
                    fail(f"{method}: {message['error']}")
                return message.get("result", {})
            event = message.get("method")
            if event == "Runtime.consoleAPICalled":
                self.console.append(" ".join(
                    str(a.get("value", a.get("description", ""))) for a in message["params"]["args"]))
            elif event == "Log.entryAdded":
                self.console.append(message["params"]["entry"].get("text", ""))

    def eval(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            fail(f"script error in {expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url):
        self.call("Page.navigate", url=url)
        self.wait_loaded(url)

    def wait_loaded(self, url):
        wait_for(f"{url} to load", lambda: self.eval(
            f"document.readyState === 'complete' && location.href === {json.dumps(url)}"))

    def text(self):
        return self.eval("document.body ? document.body.innerText : ''")

    def screenshot(self, path):
        height = self.eval("Math.ceil(document.documentElement.scrollHeight)")
        self.call("Emulation.setDeviceMetricsOverride", width=1280, height=height,
                  deviceScaleFactor=1, mobile=False)
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))

    def close(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


# --- the test ----------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    parser.add_argument("--tidesync", default=os.path.join(target, "debug", "tidesync"))
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--screenshot", default=os.path.join(target, "ci-artifacts", "admin.png"))
    args = parser.parse_args()
    for path, what in [(args.tidesync, "the tidesync binary (cargo build -p tidesync-cli)"),
                       (args.chromium, "Chromium (apt-get install chromium)")]:
        if not os.access(path, os.X_OK):
            fail(f"{path} is not executable: need {what}")

    with tempfile.TemporaryDirectory(prefix="tidesync-admin-") as tmp:
        server = Server(args.tidesync, os.path.join(tmp, "data"))
        browser = None
        try:
            os.makedirs(server.data_dir)
            server.start()
            alice = seed(server)  # tokens go into the database next to the running server
            admin = server.base + "/admin"

            # Refused without the admin token, and with a user's API token.
            for headers in [{}, {"Authorization": f"Bearer {alice}"},
                            {"Authorization": "Bearer not-the-admin-token-0000"}]:
                status, text = server.request("GET", "/admin", headers=headers)
                if status != 401 or "user:alice" in text:
                    fail(f"/admin with {headers or 'no credentials'}: {status}, data shown")
            status, _ = server.request("GET", "/admin/metrics.json")
            if status != 401:
                fail(f"/admin/metrics.json without credentials: {status}")

            browser = Browser(args.chromium, os.path.join(tmp, "profile"))
            browser.open(admin)
            text = browser.text()
            if "Admin token" not in text or "user:alice" in text:
                fail(f"without signing in the browser should see only the login form:\n{text}")

            # A wrong token in the form: still refused.
            sign_in(browser, "not-the-admin-token-0000", admin + "/login")
            if "not the admin token" not in browser.text():
                fail(f"a wrong token was not refused:\n{browser.text()}")

            # The right one: the dashboard, with the seeded data.
            browser.open(admin)
            sign_in(browser, ADMIN_TOKEN, admin)
            wait_for("the dashboard", lambda: browser.eval("!!document.getElementById('spaces')"))
            text = browser.text()
            expected = ["user:alice", "team:rockets", "user:eve", "alice-phone", "bob-laptop",
                        "bob-phone", "eve-tablet", "bob-watch", HOSTILE_USER, "base_ahead", "stale_base",
                        "base_version 999 is above", "the record changed on the server"]
            missing = [e for e in expected if e not in text]
            if missing:
                fail(f"the dashboard lacks {missing}:\n{text}")
            row = browser.eval(
                "[...document.querySelectorAll('#spaces tbody tr')]"
                ".map(r => [...r.cells].map(c => c.innerText))"
                ".find(r => r[0] === 'user:alice')")
            if row != ["user:alice", "4", "2", "1"]:
                fail(f"user:alice should be at version 4 with 2 live and 1 deleted: {row}")
            watcher = browser.eval(
                "[...document.querySelectorAll('#clients tbody tr')]"
                ".map(r => [...r.cells].map(c => c.innerText))"
                ".find(r => r[0] === 'bob-watch')")
            if not watcher or watcher[1:3] != ["bob", "none"] or "(pull)" not in watcher[3]:
                fail(f"bob-watch should be listed as bob's, never pushed, seen pulling: {watcher}")
            if browser.eval("!!document.getElementById('pwned')"):
                fail("a user name became markup")

            # Live rates: traffic now shows up per second, from the page's own script.
            traffic = threading.Thread(target=churn, args=(server, alice), daemon=True)
            traffic.start()
            wait_for("live rates", lambda: browser.eval(
                "document.getElementById('live').innerText.startsWith('Live') && "
                "Number(document.querySelector('[data-metric=\"pushes\"]').innerText) > 0"),
                timeout=30)
            traffic.join()
            if browser.eval("getComputedStyle(document.querySelector('header')).display") != "flex":
                fail("the page's own style was not applied (refused by the Content-Security-Policy?)")
            blocked = [m for m in browser.console if "Content Security Policy" in m]
            if blocked:
                fail(f"the Content-Security-Policy blocked something: {blocked}")
            browser.screenshot(args.screenshot)
            print(f"screenshot: {args.screenshot}")

            # Signing out ends the session.
            browser.eval("document.querySelector('header form').submit()")
            wait_for("the login form after signing out",
                     lambda: "Admin token" in browser.text() and "user:alice" not in browser.text())
        finally:
            if browser:
                browser.close()
            server.stop()
    print("ok: the admin dashboard refused without the token and showed the seeded server")


def sign_in(browser, token, expected_url):
    browser.eval(f"document.getElementById('token').value = {json.dumps(token)}; "
                 "document.querySelector('form').submit()")
    browser.wait_loaded(expected_url)


def churn(server, token):
    """A few seconds of pushes and pulls, so the live rates have something to show."""
    seq = 6
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        server.push(token, "alice-phone", [
            mutation(seq, "user:alice", "todos", f"c{seq}", doc={"n": seq})])
        server.pull(token, "alice-phone", ["user:alice"])
        seq += 1
        time.sleep(0.05)


if __name__ == "__main__":
    main()
