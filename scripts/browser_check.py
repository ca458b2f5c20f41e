#!/usr/bin/env python3
"""The /docs page in a real browser: headless Chromium driven through the DevTools protocol.

  browser_check.py CHROMIUM BASE_URL [--screenshot PATH]

The protocol runs over --remote-debugging-pipe (file descriptors 3 and 4, NUL-terminated JSON messages), so
there is no debugging port and no third-party package. What it checks, against a service in demo mode:

  - /docs loads with no console error, no uncaught exception and no CSP violation, and its script shows the
    "Try it" form;
  - a valid applicant typed into the form and sent with a click comes back as 200 with the demo score of its ID
    number, the typed correlation id in the shown header and answer;
  - an invalid ID number comes back as the service's 422 with the field named in the shown answer;
  - nothing typed ends up in the address, in storage or in a cookie;
  - with JavaScript off the form stays hidden and the <noscript> note is what the reader sees.

Chromium is kept off the network: every host but loopback resolves to nothing and any other connection goes
to a dead proxy on loopback. Every wait is bounded. Exit 0 with one summary line, or 1 with the reasons.
"""
import base64
import fcntl
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time

TIMEOUT = 15.0
APPLICANT = {"firstName": "Thandi", "lastName": "Nkosi", "idNumber": "9001011234084"}
CORRELATION_ID = "browser-check-1"


class Failed(Exception):
    pass


def demo_score(id_number):
    """The contract's demo scoring: the sum of the digits mod 101, then the level bands."""
    score = sum(int(d) for d in id_number) % 101
    level = "LOW" if score <= 25 else "MEDIUM" if score <= 50 else "HIGH" if score <= 75 else "CRITICAL"
    return score, level


class Browser:
    """One headless Chromium with a throwaway profile, spoken to over its DevTools pipe."""

    def __init__(self, chromium, profile, log):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire():
            # Move both ends above 10 first so neither can be overwritten by the other's dup2 onto 3 or 4.
            read_end = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
            write_end = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        args = [
            chromium, "--headless=new", "--no-sandbox", "--remote-debugging-pipe",
            f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
            "--disable-gpu", "--disable-extensions", "--disable-sync", "--disable-component-update",
            "--disable-background-networking", "--disable-default-apps", "--disable-domain-reliability",
            "--disable-client-side-phishing-detection", "--no-pings", "--metrics-recording-only",
            "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
            "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>;127.0.0.1;localhost",
            "about:blank",
        ]
        # close_fds=False: the wired descriptors must survive to exec; every other descriptor Python made is
        # close-on-exec anyway.
        self.process = subprocess.Popen(args, preexec_fn=wire, close_fds=False, stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=log)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._next_id = 0
        self._messages = queue.Queue()
        self.events = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        buffer = b""
        with os.fdopen(self._from_chrome, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                buffer += chunk
                while b"\0" in buffer:
                    message, buffer = buffer.split(b"\0", 1)
                    self._messages.put(json.loads(message))
        self._messages.put(None)

    def _take(self, deadline):
        try:
            message = self._messages.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise Failed("Chromium did not answer in time") from None
        if message is None:
            raise Failed("Chromium closed its DevTools pipe")
        return message

    def send(self, method, params=None, session=None, timeout=TIMEOUT):
        self._next_id += 1
        call_id = self._next_id
        message = {"id": call_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._take(deadline)
            if answer.get("id") == call_id:
                if "error" in answer:
                    raise Failed(f"{method}: {answer['error'].get('message')}")
                return answer.get("result", {})
            if "method" in answer:
                self.events.append(answer)

    def wait_event(self, method, session, seen, match=lambda params: True, timeout=TIMEOUT):
        """The first `method` event for `session` from self.events[seen:] on whose params `match`, waiting for
        it if need be."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events[seen:]:
                if (event["method"] == method and event.get("sessionId") == session
                        and match(event.get("params", {}))):
                    return event
            seen = len(self.events)
            answer = self._take(deadline)
            if "method" in answer:
                self.events.append(answer)

    def drain(self):
        """Keeps the events Chromium sent that no call has read yet, so late errors are counted too."""
        while True:
            try:
                message = self._messages.get_nowait()
            except queue.Empty:
                return
            if message and "method" in message:
                self.events.append(message)

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except Failed:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Tab:
    """One page target attached in flat mode, with the domains that report console errors enabled."""

    def __init__(self, browser, scripts=True):
        self.browser = browser
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send("Page.setLifecycleEventsEnabled", {"enabled": True})
        if not scripts:
            self.send("Emulation.setScriptExecutionDisabled", {"value": True})

    def send(self, method, params=None):
        return self.browser.send(method, params, self.session)

    def open(self, url):
        # The load event of this navigation (its loader), which may arrive before Page.navigate's own answer.
        seen = len(self.browser.events)
        loader = self.send("Page.navigate", {"url": url}).get("loaderId")
        self.browser.wait_event("Page.lifecycleEvent", self.session, seen,
                                lambda p: p.get("name") == "load" and p.get("loaderId") == loader)
        if self.evaluate("location.href") != url:
            raise Failed(f"{url} did not load: {self.evaluate('document.body.innerText')[:200]!r}")

    def evaluate(self, expression):
        answer = self.send("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": True, "userGesture": True,
        })
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            reason = details.get("exception", {}).get("description") or details.get("text")
            raise Failed(f"evaluating {expression[:60]!r}: {reason}")
        return answer["result"].get("value")

    def type_into(self, element_id, text):
        """Focuses the field and types `text` (not empty) over what it held, as keyboard input inserts it."""
        # Typed text replaces the selection, as it would for a person who selected the field's old value.
        self.evaluate(f"(e => {{ e.focus(); e.select(); }})(document.getElementById({json.dumps(element_id)}))")
        self.send("Input.insertText", {"text": text})

    def click(self, selector):
        # Scrolled into the viewport first: a mouse event only reaches what is on screen.
        box = self.evaluate(
            f"(e => {{ if (!e) return null; e.scrollIntoView({{block: 'center'}});"
            f" const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})"
            f"(document.querySelector({json.dumps(selector)}))")
        if not box:
            raise Failed(f"nothing to click at {selector}")
        x, y = box
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent",
                      {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def shown_answer(self):
        """Waits (bounded, in the page) until the form has an answer, then reads what it shows."""
        return self.evaluate("""new Promise((resolve, reject) => {
            const result = document.getElementById("try-result");
            const give = () => resolve({
                status: document.getElementById("try-status").textContent,
                headers: Object.fromEntries([...document.querySelectorAll("#try-headers tr")]
                    .map(row => [row.cells[0].textContent, row.cells[1].textContent])),
                body: document.getElementById("try-body").textContent,
            });
            const done = () => !result.hidden && result.getAttribute("aria-busy") === "false";
            if (done()) return give();
            const watch = new MutationObserver(() => { if (done()) { watch.disconnect(); give(); } });
            watch.observe(result, { attributes: true });
            setTimeout(() => { watch.disconnect(); reject(new Error("no answer shown within 10 s")); }, 10000);
        })""")


def console_errors(events, provoked=None):
    """Every error the page or the browser reported, except one: `provoked` = (index into events, URL,
    status) of an error answer the check asked for on purpose, which Chromium logs as a failed load."""
    errors = []
    for index, event in enumerate(events):
        method, params = event["method"], event.get("params", {})
        entry = params.get("entry", {})
        if (provoked and method == "Log.entryAdded" and entry.get("source") == "network"
                and index >= provoked[0] and entry.get("url") == provoked[1]
                and f"status of {provoked[2]} " in entry.get("text", "")):
            provoked = None
            continue
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            errors.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".rstrip())
    return errors


def check(condition, message, failures):
    if not condition:
        failures.append(message)


def submit(tab, fields, correlation_id):
    tab.type_into("try-first", fields["firstName"])
    tab.type_into("try-last", fields["lastName"])
    tab.type_into("try-id", fields["idNumber"])
    tab.type_into("try-cid", correlation_id)
    tab.click("#try-form button")
    shown = tab.shown_answer()
    try:
        shown["json"] = json.loads(shown["body"])
    except ValueError:
        shown["json"] = None
    return shown


def run(chromium, base, screenshot):
    failures = []
    ok = None
    provoked = None
    docs = base + "/docs"
    with tempfile.TemporaryDirectory(prefix="browser-check-") as profile, \
            open(os.path.join(profile, "chromium.log"), "w+") as log:
        browser = Browser(chromium, os.path.join(profile, "profile"), log)
        try:
            tab = Tab(browser)
            tab.open(docs)
            check(tab.evaluate('document.getElementById("try-form").hidden') is False,
                  "the script did not show the form", failures)
            check(tab.evaluate('document.getElementById("try-token")') is None,
                  "a token field is shown although authentication is off", failures)

            ok = submit(tab, APPLICANT, CORRELATION_ID)
            score, level = demo_score(APPLICANT["idNumber"])
            check(ok["status"].startswith("200"), f"valid applicant: status {ok['status']!r}, not 200", failures)
            answer = ok["json"] or {}
            check(answer.get("riskScore") == score and answer.get("riskLevel") == level,
                  f"valid applicant: shown answer {ok['body']!r}, expected riskScore {score} ({level})", failures)
            check(answer.get("correlationId") == CORRELATION_ID and
                  ok["headers"].get("X-Correlation-ID") == CORRELATION_ID,
                  f"the typed correlation id is not in the shown answer and header: {ok}", failures)

            # Chromium logs a 4xx answer to fetch as a failed load: that one entry is expected from here on.
            provoked = (len(browser.events), base + "/api/v1/validate", 422)
            bad = submit(tab, dict(APPLICANT, idNumber="12345"), "browser-check-2")
            details = (bad["json"] or {}).get("details") or [{}]
            check(bad["status"].startswith("422") and details[0].get("field") == "idNumber",
                  f"invalid ID number: shown {bad['status']!r} {bad['body']!r}, expected 422 naming idNumber",
                  failures)

            leaks = tab.evaluate(
                "[location.href, localStorage.length, sessionStorage.length, document.cookie]")
            check(leaks == [docs, 0, 0, ""], f"typed values may have left the request: {leaks}", failures)
            if screenshot:
                shot = tab.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
                with open(screenshot, "wb") as out:
                    out.write(base64.b64decode(shot["data"]))

            off = Tab(browser, scripts=False)
            off.open(docs)
            root = off.send("DOM.getDocument")["root"]["nodeId"]
            form = off.send("DOM.querySelector", {"nodeId": root, "selector": "#try-form"})["nodeId"]
            attributes = off.send("DOM.getAttributes", {"nodeId": form})["attributes"] if form else []
            check(form and "hidden" in attributes[::2], "with JavaScript off the form is not hidden", failures)
            note = off.send("DOM.querySelector", {"nodeId": root, "selector": "noscript strong"})["nodeId"]
            check(note != 0, "with JavaScript off the <noscript> note is not rendered", failures)
        except Failed as error:
            failures.append(str(error))
        finally:
            browser.drain()
            failures.extend(console_errors(browser.events, provoked))
            browser.close()
            if failures:
                # Without a system bus Chromium complains about D-Bus at every start; that is not the cause.
                log.seek(0)
                lines = [line for line in log.read().splitlines() if "dbus" not in line]
                if lines:
                    failures.append("chromium's output, last lines:\n" + "\n".join(lines[-20:]))
    return failures, ok


def main():
    args = sys.argv[1:]
    screenshot = None
    if "--screenshot" in args:
        at = args.index("--screenshot")
        screenshot = args[at + 1]
        del args[at:at + 2]
    if len(args) != 2:
        sys.exit(__doc__.split("\n\n")[1])
    chromium, base = args
    failures, ok = run(chromium, base.rstrip("/"), screenshot)
    if failures:
        for failure in failures:
            print(f"browser check: FAIL {failure}", file=sys.stderr)
        sys.exit(1)
    print(f"browser check: passed: /docs with no console errors; the form answered {ok['status']} "
          f"{json.dumps(ok['json'], separators=(',', ':'))}; 422 shown for a bad ID; JavaScript-off view hidden")


if __name__ == "__main__":
    main()
