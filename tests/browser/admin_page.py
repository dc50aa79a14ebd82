#!/usr/bin/env python3
"""The admin page in headless Chromium (Debian's, driven by Playwright).

Starts the real binary on free ports with a temporary data directory and an
admin token, opens /admin/, enters the token and checks what an operator
sees and does: every service shown, "Force open" (confirmed in the page's
dialog) shown open within 2 s, "Restart" raising the restart count (on the
page and in /admin/actors), the charts drawing data, no console error (a
CSP violation would be one). Screenshots go to $STAGEWORKS_SCREENSHOT_DIR.

    python3 tests/browser/admin_page.py [--binary target/debug/stageworks]

Never downloads a browser: it launches /usr/bin/chromium (or
$STAGEWORKS_CHROMIUM) with a fresh profile.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from playwright.sync_api import sync_playwright

TOKEN = "browser-test-admin-token-0123"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


class Server:
    """The stageworks binary, its addresses read from its JSON start-up line."""

    def __init__(self, binary, data_dir, stderr_path):
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        env["RUST_BACKTRACE"] = "0"
        env.pop("STAGEWORKS__DATABASE__URL", None)
        env.update(
            {
                "STAGEWORKS__DATA_DIR": data_dir,
                "STAGEWORKS__SERVER__LISTEN": "127.0.0.1:0",
                "STAGEWORKS__ADMIN__LISTEN": "127.0.0.1:0",
                "STAGEWORKS__ADMIN__TOKEN": TOKEN,
                "STAGEWORKS__ADMIN__HISTORY_EVERY": "250ms",
                "STAGEWORKS__RATE_LIMIT__ENABLED": "false",
                # A poisoned event becomes a dead letter within a second.
                "STAGEWORKS__EVENTS__MAX_ATTEMPTS": "2",
                "STAGEWORKS__EVENTS__RETRY_MIN": "20ms",
                "STAGEWORKS__EVENTS__RETRY_MAX": "100ms",
                "STAGEWORKS__LOG__FORMAT": "json",
                "STAGEWORKS__LOG__LEVEL": "warn,stageworks::app=info",
            }
        )
        # The injected panics' messages: kept beside the screenshots.
        self.stderr = open(stderr_path, "w")
        self.process = subprocess.Popen(
            [binary, "serve", "--config", "config.toml"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        self.public, self.admin = self._addresses()
        threading.Thread(target=self._drain, daemon=True).start()

    def _addresses(self):
        deadline = time.monotonic() + 60
        for line in self.process.stdout:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            fields = entry.get("fields", {})
            if fields.get("message") == "stageworks is serving":
                return fields["public_addr"], fields["admin_addr"]
            if time.monotonic() > deadline:
                break
        raise RuntimeError("the binary never said it was serving")

    def _drain(self):
        for _ in self.process.stdout:
            pass

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.stderr.close()


def request(method, url, body=None, token=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            text = response.read().decode()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as err:
        return err.code, None


def wait_ready(server):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if request("GET", f"http://{server.public}/ready")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the server never became ready")


def some_traffic(server):
    """A user with two orders, so the per-route charts have lines."""
    base = f"http://{server.public}/api/v1"
    user = {"email": "browser@example.com", "password": "a browser test password", "name": "B"}
    status, registered = request("POST", base + "/auth/register", user)
    assert status == 201, status
    status, login = request("POST", base + "/auth/login", {k: user[k] for k in ("email", "password")})
    assert status == 200, status
    for amount in (3, 4):
        status, _ = request("POST", base + "/orders", {"amount": amount}, login["access_token"])
        assert status == 201, status
    return registered["id"], login["access_token"]


def admin_node(server, name):
    status, node = request("GET", f"http://{server.admin}/admin/actors/{name}", token=TOKEN)
    assert status == 200, status
    return node


class Checks:
    def __init__(self):
        self.passed, self.failed = 0, 0

    def run(self, name, check):
        try:
            check()
        except Exception as err:  # noqa: BLE001 - every failure is reported
            self.failed += 1
            print(f"FAIL {name}: {err!r}", flush=True)
            return False
        self.passed += 1
        print(f"ok   {name}", flush=True)
        return True


def confirm(page):
    page.wait_for_selector("#confirm[open]", timeout=2000)
    page.click("#confirm-ok")


def browse(server, user, shots, checks):
    profile = tempfile.mkdtemp(prefix="stageworks-chromium-")
    console_errors = []
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile,
                executable_path=os.environ.get("STAGEWORKS_CHROMIUM", "/usr/bin/chromium"),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1500, "height": 1100},
            )
            page = context.new_page()
            recording = []
            # Errors before the token is entered: the two refusals expected.
            before_token = []
            page.on(
                "console",
                lambda m: m.type == "error" and (console_errors if recording else before_token).append(m.text),
            )
            page.on("pageerror", lambda e: console_errors.append(str(e)))
            page.goto(f"http://{server.admin}/admin/")

            def refused_without_the_token():
                # The page tries once without a token (a listener may have
                # none), is refused (a 401 the console shows), and waits.
                page.wait_for_function(
                    """() => document.getElementById('status').textContent === 'token refused'
                          && document.getElementById('history-note').textContent.includes('refused')""",
                    timeout=5000,
                )
                # The browser reports each refused request on the console on
                # its own time, possibly after the page has shown it: wait
                # for both (stream and history), so that neither is counted
                # against the page once the token is in.
                deadline = time.monotonic() + 5
                while sum("401" in m for m in before_token) < 2:
                    assert time.monotonic() < deadline, before_token
                    page.wait_for_timeout(50)

            checks.run("without the token the page is refused and says so", refused_without_the_token)
            recording.append(True)
            page.fill("#token", TOKEN)
            page.click("#connect")

            services = [c["name"] for c in admin_node(server, "root")["children"]]

            def every_service_shown():
                page.wait_for_function("document.getElementById('status').textContent === 'live'", timeout=5000)
                for name in services:
                    page.wait_for_selector(f"tr.service[data-service='{name}']", timeout=5000)

            checks.run(f"every service shown ({', '.join(services)})", every_service_shown)
            page.screenshot(path=os.path.join(shots, "01-connected.png"), full_page=True)

            def force_open_shown_within_2s():
                page.click("tr[data-service='orders'] button[data-action='open']")
                page.wait_for_selector("#confirm[open]", timeout=2000)
                page.screenshot(path=os.path.join(shots, "02-confirm.png"))
                started = time.monotonic()
                page.click("#confirm-ok")
                page.wait_for_function(
                    """() => {
                        const c = document.querySelector("tr[data-service='orders'] td[data-field='circuit']");
                        return c && c.textContent.startsWith('open');
                    }""",
                    timeout=2000,
                )
                elapsed = time.monotonic() - started
                assert elapsed < 2.0, elapsed
                assert admin_node(server, "orders")["circuit"]["state"] == "open"

            checks.run("force open is shown within 2 s", force_open_shown_within_2s)
            page.screenshot(path=os.path.join(shots, "03-orders-open.png"), full_page=True)

            def close_again():
                page.click("tr[data-service='orders'] button[data-action='close']")
                confirm(page)
                page.wait_for_function(
                    """() => document.querySelector("tr[data-service='orders'] td[data-field='circuit']")
                              .textContent === 'closed'""",
                    timeout=3000,
                )

            checks.run("close is shown", close_again)

            def restart_counts():
                before = admin_node(server, "billing")["restarts"]
                cell = "tr[data-service='billing'] td[data-field='restarts']"
                assert int(page.get_attribute(cell, "data-value")) == before
                page.click("tr[data-service='billing'] button[data-action='restart']")
                confirm(page)
                page.wait_for_function(
                    f"""() => Number(document.querySelector("{cell}").dataset.value) > {before}""",
                    timeout=5000,
                )
                assert admin_node(server, "billing")["restarts"] > before

            checks.run("restart raises the restart count (page and /admin/actors)", restart_counts)

            def worker_restart_counts():
                worker = "orders-worker-0"
                before = admin_node(server, worker)["restarts"]
                page.click("tr[data-service='orders'] button[data-toggle='workers']")
                cell = f"tr[data-worker='{worker}'] td[data-field='restarts']"
                page.wait_for_selector(cell, timeout=3000)
                page.click(f"tr[data-worker='{worker}'] button[data-action='restart']")
                confirm(page)
                page.wait_for_function(
                    f"""() => Number(document.querySelector("{cell}").dataset.value) > {before}""",
                    timeout=5000,
                )
                assert admin_node(server, worker)["restarts"] > before
                page.click("tr[data-service='orders'] button[data-toggle='workers']")

            checks.run("restarting one worker raises its count", worker_restart_counts)

            def cancel_does_nothing():
                before = admin_node(server, "auth")["restarts"]
                page.click("tr[data-service='auth'] button[data-action='restart']")
                page.wait_for_selector("#confirm[open]", timeout=2000)
                page.click("#confirm-cancel")
                time.sleep(0.5)
                assert admin_node(server, "auth")["restarts"] == before

            checks.run("a cancelled confirmation does nothing", cancel_does_nothing)

            def charts_have_data():
                for metric in ("process_rss_bytes", "http_requests_per_second", "service_messages_per_second"):
                    page.wait_for_function(
                        f"""() => Number((document.querySelector("[data-metric='{metric}']") || {{dataset: {{}}}})
                                  .dataset.points || 0) > 1""",
                        timeout=10000,
                    )

            checks.run("the charts have data", charts_have_data)

            def replay_a_dead_letter():
                # The fault-injection build's poison: billing panics on this
                # user's events, so the next order's event is a dead letter.
                user_id, access = user
                poison = f"http://{server.admin}/admin/faults/poison/billing/{user_id}"
                assert request("PUT", poison, token=TOKEN)[0] == 204
                status, _ = request("POST", f"http://{server.public}/api/v1/orders", {"amount": 9}, access)
                assert status == 201, status
                row = "#dead-letters tr[data-dead-letter]"
                page.wait_for_selector(row, timeout=15000)
                assert request("DELETE", poison, token=TOKEN)[0] == 204
                page.screenshot(path=os.path.join(shots, "04-dead-letter.png"), full_page=True)
                page.click(row + " button[data-action='replay']")
                confirm(page)
                page.wait_for_selector(row, state="detached", timeout=5000)
                status, letters = request("GET", f"http://{server.admin}/admin/events/dead-letters", token=TOKEN)
                assert status == 200 and letters["data"] == [], letters

            checks.run("a dead letter is shown and replayed", replay_a_dead_letter)
            page.wait_for_timeout(2500)  # one more history refresh: longer lines
            page.screenshot(path=os.path.join(shots, "admin-page.png"), full_page=True)

            def no_console_errors():
                assert not console_errors, console_errors

            checks.run("no console error (CSP violations included)", no_console_errors)
            context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=os.environ.get("STAGEWORKS_BIN", "target/debug/stageworks"))
    args = parser.parse_args()
    shots = os.environ.get("STAGEWORKS_SCREENSHOT_DIR") or tempfile.mkdtemp(prefix="stageworks-shots-")
    os.makedirs(shots, exist_ok=True)
    data_dir = tempfile.mkdtemp(prefix="stageworks-browser-")
    checks = Checks()
    server = Server(args.binary, data_dir, os.path.join(shots, "stageworks.stderr.log"))
    try:
        wait_ready(server)
        user = some_traffic(server)
        browse(server, user, shots, checks)
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"screenshots: {shots}")
    print(f"browser: {checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
