#!/usr/bin/env python3
"""The web console in a real browser: headless Chromium (Debian's chromium + chromium-driver)
driven by Selenium, against the real binary on SQLite with a fake Google (one that answers
Google's pixel size for the ratio and resolution asked, and tells what it was sent).

The server's address -> the console; sign up -> create a key (shown once, copied) -> the
playground (the key chosen from the user's keys, kept across a reload; the result beside the
form with its details; a 2K 21:9 image from the pickers; an input image dropped on the page) ->
usage (a chart with a y-axis, images or dollars, per key and per model, budgets as progress) ->
history (cards with model, resolution, size, cost and status; filters; "Edit this image" sends
the earlier turn; a queued job's card turns succeeded) -> keys as cards at 375 px, limits
edited in place -> webhooks (secret shown once, a test event delivered to a local receiver and
verified, deliveries listed) -> admin -> log out -> an ordinary user's whole flow. Every page is
photographed at desktop size and at 375 px wide into target/console-screenshots/; the pages'
Content-Security-Policy is checked, and the browser's console must stay free of errors and
warnings (CSP violations included) throughout, for the admin and for the ordinary user.

Usage: console_check.py NANOBANANA FAKE_GOOGLE
"""

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait
from standardwebhooks.webhooks import Webhook

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHOTS = os.path.join(ROOT, "target", "console-screenshots")
EMAIL = "console@example.com"
PASSWORD = "a console password"
DESKTOP = (1280, 900)
# A 1x1 PNG.
TINY_PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg==")
PHONE = (375, 812)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver(BaseHTTPRequestHandler):
    """A webhook receiver on loopback: keeps what it is sent, answers 204."""

    received = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        Receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def fake_google_saw(google_port):
    """What the fake Google was sent last: model, contents' roles, inline images, imageConfig."""
    with urllib.request.urlopen(f"http://127.0.0.1:{google_port}/last-request") as answer:
        return json.loads(answer.read())


def fake_google_latency(google_port, latency_ms):
    request = urllib.request.Request(f"http://127.0.0.1:{google_port}/control", method="POST",
                                     data=json.dumps({"latency_ms": latency_ms, "image_bytes": 2048}).encode())
    urllib.request.urlopen(request).close()


def wait_for_port(port, process, what):
    for _ in range(300):
        if process.poll() is not None:
            raise SystemExit(f"{what} exited early")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not start")


class Console:
    def __init__(self, driver, base):
        self.driver, self.base = driver, base
        self.wait = WebDriverWait(driver, 20)
        self.console_errors = []

    def find(self, css):
        return self.wait.until(ready.visibility_of_element_located((By.CSS_SELECTOR, css)))

    def gone(self, css):
        self.wait.until(ready.invisibility_of_element_located((By.CSS_SELECTOR, css)))

    def text_in(self, css, text):
        self.wait.until(ready.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))

    def heading(self, text):
        self.text_in("main h1", text)

    def go(self, page, heading):
        self.driver.find_element(By.CSS_SELECTOR, f'nav a[href="#/{page}"]').click()
        self.heading(heading)

    def fill(self, css, value):
        element = self.find(css)
        element.clear()
        element.send_keys(value)

    def accept_confirm(self):
        self.wait.until(ready.alert_is_present()).accept()

    # API answers the flow asks for on purpose: Chromium logs every 4xx as a failed load.
    EXPECTED_FAILED_LOADS = (
        re.compile(r"/v1/auth/me - Failed to load resource: .* 401"),  # not signed in (yet)
        re.compile(r"/v1/auth/register\?session=cookie - Failed to load resource: .* 422"),  # bad email
        re.compile(r"/v1/keys/[0-9a-f-]+ - Failed to load resource: .* 422"),  # a budget of "two"
    )

    def collect_console(self):
        for entry in self.driver.get_log("browser"):
            if entry["level"] not in ("SEVERE", "WARNING"):
                continue
            if entry.get("source") == "network" and any(
                    pattern.search(entry["message"]) for pattern in self.EXPECTED_FAILED_LOADS):
                continue
            self.console_errors.append(entry["message"])

    def signed_out_chrome(self):
        """No navigation and no Log out while signed out; focus on the heading, unframed."""
        assert not self.driver.find_element(By.ID, "nav").is_displayed(), "navigation shown signed out"
        assert not self.driver.find_element(By.ID, "logout").is_displayed(), "Log out shown signed out"
        focused = self.driver.execute_script(
            "const e = document.activeElement; return [e.tagName, getComputedStyle(e).outlineStyle];")
        assert focused == ["H1", "none"], f"focus: {focused}"

    def texts(self, css):
        """The text of every element `css` finds, read at once (no element can go stale)."""
        return self.driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent)", css)

    def displayed(self, css):
        return any(element.is_displayed() for element in self.driver.find_elements(By.CSS_SELECTOR, css))

    def submit(self, form="main form"):
        self.driver.find_element(By.CSS_SELECTOR, f"{form} button[type=submit]").click()

    def generated(self):
        """Waits for the playground's image to be shown, loaded, and returns the result's text."""
        self.find("#generated-image")
        self.wait.until(lambda _: self.driver.execute_script(
            "const i = document.getElementById('generated-image'); return i && i.complete && i.naturalWidth > 0;"))
        self.text_in("#result", "Made in")
        return self.find("#result").text

    def drop_png(self, css):
        """Drops a small PNG file on the element, as a person dragging it from their desktop."""
        self.driver.execute_script("""
            const bytes = Uint8Array.from(atob(arguments[1]), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
            const zone = document.querySelector(arguments[0]);
            for (const type of ["dragover", "drop"]) {
              zone.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));
            }""", css, TINY_PNG)

    def chart_readable(self, css):
        """Every text of the chart inside it, 13 px on screen (drawn at the width it is shown)."""
        problems = self.driver.execute_script("""
            const chart = document.querySelector(arguments[0]);
            const width = chart.viewBox.baseVal.width;
            const shown = chart.getBoundingClientRect().width;
            const clipped = [...chart.querySelectorAll('text')].filter((text) => {
              const box = text.getBBox();
              return box.x < 0 || box.x + box.width > width + 0.5 || getComputedStyle(text).fontSize !== '13px';
            }).map((text) => text.textContent);
            return {clipped, scale: shown / width, ticks: chart.querySelectorAll('.tick').length};""", css)
        assert not problems["clipped"] and abs(problems["scale"] - 1) < 0.02 and problems["ticks"] >= 2, problems

    def key_spend(self, key_id):
        """The key's spend this month as the console writes it (from the API)."""
        usd = self.driver.execute_script(
            "return fetch('/v1/keys/' + arguments[0], {credentials: 'same-origin'})"
            ".then(r => r.json()).then(k => k.usage.spend_this_month_usd)", key_id)
        value = float(usd)
        return f"${value:.2f}" if value == 0 or value >= 1 else f"${value:.4f}"

    def shoot(self, name):
        """A desktop and a 375 px screenshot of the whole page as it is."""
        os.makedirs(SHOTS, exist_ok=True)
        for label, (width, height) in (("desktop", DESKTOP), ("375px", PHONE)):
            self.driver.set_window_size(width, height)
            time.sleep(0.2)
            # The page must not need sideways scrolling on a phone (tables scroll in their box).
            if label == "375px":
                overflow = self.driver.execute_script(
                    "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
                assert overflow <= 1, f"{name}: {overflow} px wider than a 375 px screen"
            # The whole page: the window as tall as the page (headless Chromium draws it all).
            page, chrome = self.driver.execute_script(
                "window.scrollTo(0, 0); return [document.documentElement.scrollHeight, outerHeight - innerHeight]")
            self.driver.set_window_size(width, min(max(height, page + chrome), 4000))
            time.sleep(0.2)
            self.driver.execute_script("window.scrollTo(0, 0)")
            self.driver.save_screenshot(os.path.join(SHOTS, f"{name}-{label}.png"))
        self.driver.set_window_size(*DESKTOP)
        time.sleep(0.1)
        self.collect_console()


def check_headers(base):
    with urllib.request.urlopen(f"{base}/console/") as response:
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy, policy
        assert "frame-ancestors 'none'" in policy, policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        page = response.read().decode()
    assert "<script>" not in page and "style=" not in page, "inline script or style in the page"


def run(binary, fake_google):
    work = tempfile.mkdtemp(prefix="nb-console-")
    google_port, port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    google = subprocess.Popen([fake_google, f"127.0.0.1:{google_port}", "--google-pixels"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    env = dict(os.environ, NB_LISTEN=f"127.0.0.1:{port}", NB_DATA_DIR=work, NB_BCRYPT_COST="4",
               GOOGLE_API_KEY="console-google-key", GOOGLE_GEMINI_BASE_URL=f"http://127.0.0.1:{google_port}",
               NB_ADMIN_EMAILS=EMAIL, JWT_SECRET=secrets.token_hex(32), RUST_LOG="warn",
               NB_WEBHOOK_ALLOW_HTTP="true", NB_WEBHOOK_ALLOW_PRIVATE_TARGETS="true")
    env.pop("DATABASE_URL", None)
    log = open(os.path.join(work, "server.log"), "w")
    server = subprocess.Popen([binary], env=env, stdout=log, stderr=subprocess.STDOUT)
    driver = None
    try:
        wait_for_port(google_port, google, "the fake Google")
        wait_for_port(port, server, "the server")
        check_headers(base)
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                         f"--window-size={DESKTOP[0]},{DESKTOP[1]}"):
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        console = Console(driver, base)

        # The server's address sends a browser to the console, never to raw JSON.
        driver.get(f"{base}/")
        console.heading("Log in")
        assert driver.current_url.startswith(f"{base}/console/"), driver.current_url
        # Signed out, there is no navigation and no "Log out"; the page's heading has focus,
        # with no frame drawn.
        console.signed_out_chrome()
        console.shoot("login")
        # Sign up (an error first: shown next to its field, in words).
        driver.find_element(By.LINK_TEXT, "Create an account").click()
        console.heading("Create an account")
        console.fill("#email", "not an email")
        console.fill("#password", PASSWORD)
        console.submit()
        console.text_in("#email-error", "email")
        assert driver.find_element(By.CSS_SELECTOR, "#email").get_attribute("aria-invalid") == "true"
        console.shoot("signup-error")
        console.fill("#email", EMAIL)
        console.submit()
        console.heading("API keys")
        cookies = {cookie["name"]: cookie for cookie in driver.get_cookies()}
        assert cookies["nb_session"]["httpOnly"] and cookies["nb_session"]["sameSite"] == "Strict", cookies
        assert not driver.execute_script("return document.cookie").count("nb_session"), "the token is readable"

        # A key: a budget that is not an amount is refused, naming the field; then the key is
        # created with a monthly budget, shown in full once, copied.
        console.fill("#key-name", "console")
        console.fill("#key-budget", "ten")
        console.submit()
        console.text_in("#key-budget-error", "amount of US dollars")
        assert driver.find_element(By.CSS_SELECTOR, "#key-budget").get_attribute("aria-invalid") == "true"
        console.fill("#key-budget", "5")
        console.submit()
        shown = console.find("#new-key input").get_attribute("value")
        assert re.fullmatch(r"nb_live_[0-9a-f]{32}", shown), shown
        assert "you will not see it again" in console.find("#new-key").text
        console.find("#copy-key").click()
        console.text_in("#new-key", "Copied.")
        console.text_in("#keys", shown[:12])
        console.text_in("#keys", "$5.00/month")
        key_id = console.find(f'#keys tbody tr').get_attribute("data-key-id")

        # The playground: the key is chosen from the user's keys (this tab holds the one just
        # made: nothing to paste); the result shows beside the form with its details.
        console.go("playground", "Playground")
        choice = Select(console.find("#key-choice"))
        assert shown[:12] in choice.first_selected_option.text, choice.first_selected_option.text
        assert "console" in choice.first_selected_option.text, choice.first_selected_option.text
        assert not console.displayed("#api-key"), "asked to paste a key this tab holds"
        console.fill("#prompt", "a banana on the moon")
        console.submit()
        text = console.generated()
        # What it cost: 1120 image tokens at $60 and 12 prompt tokens at $0.50 a million.
        assert "$0.0672" in text, text
        for term in ("Model", "Resolution", "Size", "Time", "Cost"):
            assert term in text, text
        assert console.find("#download-image").get_attribute("download"), "no download link"
        assert console.find("#generated-image").get_attribute("src").startswith(f"{base}/images/")
        placed = driver.execute_script(
            "const r = document.getElementById('generated-image').getBoundingClientRect();"
            "const f = document.querySelector('main form').getBoundingClientRect();"
            "return [r.top < innerHeight, r.left >= f.right];")
        assert placed == [True, True], f"the result is not beside the form in view: {placed}"
        model_id = fake_google_saw(google_port)["model"]
        console.shoot("playground")

        # Usage: one image today, its cost; images or dollars per day, one chart at a time,
        # each with a y-axis and its text whole and 13 px at every width.
        console.go("usage", "Usage")
        console.text_in("#usage-total", "1")
        today = driver.execute_script("return new Date().toISOString().slice(0, 10)")
        bar = driver.find_element(By.CSS_SELECTOR, f'#usage-chart g[data-day="{today}"]')
        assert bar.get_attribute("data-count") == "1"
        console.text_in("#spend-total", "$0.0672")
        assert console.displayed("#usage-chart") and not console.displayed("#spend-chart")
        console.chart_readable("#usage-chart")
        driver.find_element(By.ID, "chart-spend").click()
        console.find("#spend-chart")
        assert not console.displayed("#usage-chart")
        # Spend per day, in micro-dollars: $0.067206.
        spend = driver.find_element(By.CSS_SELECTOR, f'#spend-chart g[data-day="{today}"]')
        assert spend.get_attribute("data-count") == "67206", spend.get_attribute("data-count")
        console.chart_readable("#spend-chart")
        driver.set_window_size(*PHONE)
        console.wait.until(lambda _: driver.execute_script(
            "return document.getElementById('spend-chart').getAttribute('width') < 375"))
        console.chart_readable("#spend-chart")
        driver.set_window_size(*DESKTOP)
        driver.find_element(By.ID, "chart-images").click()
        console.text_in("#usage-keys", "$0.0672")
        console.text_in("#usage-models", model_id)
        console.text_in("#usage-models", "$0.0672")
        # The key's $5 monthly budget as progress.
        console.text_in("#usage-limits", "Spent this month: $0.0672 of $5.00")

        # 2K at 21:9 from the pickers: Google's pixel size for them comes back.
        console.go("playground", "Playground")
        Select(console.find("#aspect-ratio")).select_by_value("21:9")
        Select(console.find("#resolution")).select_by_value("2K")
        console.fill("#prompt", "a wide banana")
        console.submit()
        console.text_in("#result", "3168×1344")
        text = console.generated()
        assert "21:9" in text and "2K" in text, text
        saw = fake_google_saw(google_port)
        assert saw["aspect_ratio"] == "21:9" and saw["image_size"] == "2K", saw

        # A reload keeps the playground working: the tab still holds the key. An image dropped
        # on the page is sent with the prompt.
        driver.refresh()
        console.heading("Playground")
        console.find("#key-choice")
        assert not console.displayed("#api-key"), "the key was forgotten on reload"
        console.drop_png("#dropzone")
        console.text_in("#chosen-images", "dropped.png")
        console.fill("#prompt", "put it on a plate")
        console.submit()
        console.generated()
        saw = fake_google_saw(google_port)
        assert saw["inline_images"] == 1 and saw["roles"] == ["user"], saw

        # History: cards with model, resolution, size, cost and status.
        console.go("history", "History")
        console.wait.until(lambda _: len(driver.find_elements(By.CSS_SELECTOR, '#history li[data-status="succeeded"]')) == 3)
        cards = {card.find_element(By.CSS_SELECTOR, ".prompt").text: card
                 for card in driver.find_elements(By.CSS_SELECTOR, "#history li.card")}
        moon, wide = cards["a banana on the moon"], cards["a wide banana"]
        assert "$0.0672" in moon.text and model_id in moon.text and "1K" in moon.text, moon.text
        assert "3168×1344" in wide.text and "2K" in wide.text and "succeeded" in wide.text, wide.text
        console.wait.until(lambda _: driver.execute_script(
            "return [...document.querySelectorAll('#history img')].every(i => i.complete && i.naturalWidth > 0);"))
        console.shoot("history")
        # Filters: by status, by key.
        Select(console.find("#filter-status")).select_by_value("failed")
        console.text_in("#history", "Nothing matches these filters.")
        Select(console.find("#filter-status")).select_by_value("")
        console.wait.until(lambda _: len(driver.find_elements(By.CSS_SELECTOR, '#history li[data-status="succeeded"]')) == 3)
        # (The cards are drawn anew for the key's filter: wait until the ones shown are gone.)
        shown_before = driver.find_element(By.CSS_SELECTOR, "#history li.card")
        Select(console.find("#filter-key")).select_by_value(key_id)
        console.wait.until(ready.staleness_of(shown_before))
        console.wait.until(lambda _: len(driver.find_elements(By.CSS_SELECTOR, '#history li[data-status="succeeded"]')) == 3)

        # "Edit this image" continues it in the playground, which offers the model's ratios,
        # and sends the earlier turn (the prompt and the image the model made).
        cards = {card.find_element(By.CSS_SELECTOR, ".prompt").text: card
                 for card in driver.find_elements(By.CSS_SELECTOR, "#history li.card")}
        cards["a banana on the moon"].find_element(By.XPATH, ".//button[text()='Edit this image']").click()
        console.heading("Playground")
        console.text_in("#continuing", "Continuing from")
        ratios = [option.get_attribute("value") for option in
                  driver.find_elements(By.CSS_SELECTOR, "#aspect-ratio option")]
        assert "16:9" in ratios and "21:9" in ratios, ratios
        resolutions = [option.get_attribute("value") for option in
                       driver.find_elements(By.CSS_SELECTOR, "#resolution option")]
        assert resolutions[0] == "1K" and "4K" in resolutions, resolutions
        Select(console.find("#aspect-ratio")).select_by_value("16:9")
        console.fill("#prompt", "now make it blue")
        console.submit()
        console.text_in("#result", "16:9")
        console.generated()
        saw = fake_google_saw(google_port)
        assert saw["roles"] == ["user", "model", "user"] and saw["inline_images"] == 1, saw
        console.go("history", "History")
        console.wait.until(lambda _: len(driver.find_elements(By.CSS_SELECTOR, '#history li[data-status="succeeded"]')) == 4)
        card = console.find('#history li[data-status="succeeded"]')
        card.find_element(By.XPATH, ".//button[text()='Delete']").click()
        console.accept_confirm()
        console.find('#history li[data-status="deleted"]')

        # A job submitted with the key (Prefer: respond-async) shows in the history as queued
        # or running (the fake Google takes 3 s), and its card turns succeeded by itself.
        fake_google_latency(google_port, 3000)
        request = urllib.request.Request(f"{base}/v1/generate", data=json.dumps({"prompt": "a job"}).encode(),
                                         headers={"Authorization": f"Bearer {shown}", "Prefer": "respond-async",
                                                  "Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request) as answer:
            assert answer.status == 202, answer.status
        console.go("keys", "API keys")
        console.go("history", "History")
        # (Read in one script: the page redraws the cards every 2 s while the job runs.)
        job_card = '#history li[data-status="{}"] .prompt'
        console.wait.until(lambda _: "a job" in console.texts(
            ", ".join(job_card.format(status) for status in ("queued", "running"))))
        console.wait.until(lambda _: "a job" in console.texts(job_card.format("succeeded")))
        fake_google_latency(google_port, 0)

        # Keys: the spend this month beside each key; limits edited in place (a wrong amount
        # is refused beside its field); at 375 px each key is a card, nothing off-screen.
        console.go("keys", "API keys")
        spent = console.key_spend(key_id)
        console.text_in("#keys", spent)
        row = console.find(f'#keys tr[data-key-id="{key_id}"]')
        row.find_element(By.CSS_SELECTOR, "details.edit-limits summary").click()
        console.fill(f"#per-day-{key_id}", "50")
        console.fill(f"#budget-day-{key_id}", "two")
        row.find_element(By.XPATH, ".//button[text()='Save limits']").click()
        console.wait.until(lambda _: driver.find_element(By.ID, f"budget-day-{key_id}-error").text)
        assert driver.find_element(By.ID, f"budget-day-{key_id}").get_attribute("aria-invalid") == "true"
        console.fill(f"#budget-day-{key_id}", "2")
        row.find_element(By.XPATH, ".//button[text()='Save limits']").click()
        console.text_in("#keys", "50/day")
        console.text_in("#keys", "$2.00/day")
        driver.set_window_size(*PHONE)
        time.sleep(0.2)
        layout = driver.execute_script("""
            const row = document.querySelector('#keys tbody tr');
            const cell = (label) => row.querySelector(`td[data-label="${label}"]`).getBoundingClientRect();
            return [getComputedStyle(row).display,
                    document.querySelector('#keys thead').getBoundingClientRect().width <= 1,
                    cell('Status').right <= innerWidth, cell('Actions').right <= innerWidth,
                    cell('Prefix').height < 40];""")
        assert layout == ["block", True, True, True, True], f"keys at 375 px: {layout}"
        driver.set_window_size(*DESKTOP)
        time.sleep(0.2)
        assert driver.execute_script("return getComputedStyle(document.querySelector('#keys tbody tr')).display") == "table-row"
        # Photographed with the key's limits open for editing.
        console.find(f'#keys tr[data-key-id="{key_id}"] details.edit-limits summary').click()
        console.find(f"#per-day-{key_id}")
        console.shoot("keys")

        # Webhooks: an endpoint, its signing secret shown once with Copy; a test event is
        # delivered to a receiver on loopback and verifies with that secret; a generation's
        # event is listed among the deliveries with its status and time; rotate; delete.
        console.go("webhooks", "Webhooks")
        console.fill("#webhook-url", hook)
        console.submit("#new-webhook")
        secret = console.find("#new-secret input").get_attribute("value")
        assert secret.startswith("whsec_"), secret
        console.text_in("#webhooks", hook)
        console.text_in("#webhooks", "generation.succeeded")
        driver.find_element(By.XPATH, "//ul[@id='webhooks']//button[text()='Send test event']").click()
        console.text_in("#webhooks .test-result", "Test event delivered: HTTP 204")
        headers, body = Receiver.received[0]
        Webhook(secret).verify(body, headers)
        assert json.loads(body)["type"] == "webhook.test", body
        request = urllib.request.Request(f"{base}/v1/generate", data=json.dumps({"prompt": "an event"}).encode(),
                                         headers={"Authorization": f"Bearer {shown}",
                                                  "Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(request).close()
        refresh = driver.find_element(By.XPATH, "//ul[@id='webhooks']//button[text()='Refresh deliveries']")

        def delivered(_):
            refresh.click()
            time.sleep(0.3)
            return "delivered (204)" in driver.find_element(By.ID, "webhooks").text
        console.wait.until(delivered)
        assert " ms" in console.find("#webhooks table.deliveries").text
        assert json.loads(Receiver.received[1][1])["type"] == "generation.succeeded"
        console.shoot("webhooks")
        console.go("keys", "API keys")
        console.go("webhooks", "Webhooks")
        console.text_in("#webhooks", hook)
        assert not driver.find_elements(By.CSS_SELECTOR, "#new-secret"), "the secret was shown again"
        driver.find_element(By.XPATH, "//ul[@id='webhooks']//button[text()='Rotate secret']").click()
        console.accept_confirm()
        rotated = console.find("#new-secret input").get_attribute("value")
        assert rotated.startswith("whsec_") and rotated != secret
        console.find("#webhooks li button.danger").click()
        console.accept_confirm()
        console.text_in("#webhooks", "No endpoints yet.")

        # Admin (this account is in NB_ADMIN_EMAILS): usage, spend, quotas and budgets.
        spent = console.key_spend(key_id)
        console.go("admin", "Admin: users")
        console.text_in("#users", EMAIL)
        row = console.find(f'#users tr[data-email="{EMAIL}"]')
        per_day = row.find_element(By.CSS_SELECTOR, "input.limit")
        per_day.send_keys("25")
        assert spent in row.text, (spent, row.text)
        row.find_element(By.CSS_SELECTOR, "input.budget").send_keys("100")
        row.find_element(By.XPATH, ".//button[text()='Save']").click()
        console.wait.until(lambda _: "saved" in driver.find_element(By.ID, "status").get_attribute("textContent"))
        console.go("keys", "API keys")
        console.go("admin", "Admin: users")
        saved = console.find(f'#users tr[data-email="{EMAIL}"] input.limit').get_attribute("value")
        assert saved == "25", saved
        budget = console.find(f'#users tr[data-email="{EMAIL}"] input.budget').get_attribute("value")
        assert budget == "100", budget
        console.text_in(f'#users tr[data-email="{EMAIL}"]', f"{spent} of $100.00")
        console.shoot("admin")

        # The account's quota and budget the admin set show on its owner's Usage page as
        # progress, beside the key's.
        console.go("usage", "Usage")
        console.text_in("#usage-limits", "Your account (all keys)")
        console.text_in("#usage-limits", f"Spent this month: {spent} of $100.00")
        console.text_in("#usage-limits", "of 25")
        console.text_in("#usage-limits", "Images today: 6 of 50")
        console.shoot("usage")

        # Revoke the key: the full key is not shown again, and the key is refused from then on.
        console.go("keys", "API keys")
        assert not driver.find_elements(By.CSS_SELECTOR, "#new-key")
        console.find(f'#keys button.danger[data-key="{shown[:12]}"]').click()
        console.accept_confirm()
        console.text_in("#keys", "revoked")
        request = urllib.request.Request(f"{base}/v1/generate", data=json.dumps({"prompt": "x"}).encode(),
                                         headers={"Authorization": f"Bearer {shown}",
                                                  "Content-Type": "application/json"}, method="POST")
        try:
            urllib.request.urlopen(request)
            raise AssertionError("a revoked key was accepted")
        except urllib.error.HTTPError as error:
            assert error.code == 401, error.code


        # Log out: the session is over, the tab forgets its keys, and the navigation is gone.
        driver.find_element(By.CSS_SELECTOR, "#logout").click()
        console.heading("Log in")
        console.signed_out_chrome()
        status = driver.execute_script(
            "return fetch('/v1/auth/me', {credentials: 'same-origin'}).then(r => r.status)")
        assert status == 401, status
        assert driver.execute_script("return sessionStorage.length") == 0
        console.collect_console()
        assert not console.console_errors, f"browser console (admin): {console.console_errors}"

        # An ordinary user (not an operator), the whole way: no Admin link, and no admin route
        # is asked (it would answer 403, an error in the browser's console), neither at sign-up
        # nor after a reload.
        driver.find_element(By.LINK_TEXT, "Create an account").click()
        console.heading("Create an account")
        console.fill("#email", "ordinary@example.com")
        console.fill("#password", PASSWORD)
        console.submit()
        console.heading("API keys")
        assert not driver.find_element(By.ID, "nav-admin").is_displayed(), "an Admin link for a user"
        console.fill("#key-name", "mine")
        console.submit()
        mine = console.find("#new-key input").get_attribute("value")
        console.go("playground", "Playground")
        console.fill("#prompt", "an ordinary banana")
        console.submit()
        console.generated()
        # A tab that does not hold the key asks for it once (and checks it is that key).
        driver.execute_script("sessionStorage.clear()")
        driver.refresh()
        console.heading("Playground")
        console.find("#api-key")
        console.fill("#api-key", "nb_live_0000")
        console.fill("#prompt", "another banana")
        console.submit()
        console.text_in("#api-key-error", f"starts with {mine[:12]}")
        console.fill("#api-key", mine)
        console.submit()
        console.generated()
        driver.refresh()
        console.heading("Playground")
        console.find("#key-choice")
        assert not console.displayed("#api-key"), "asked again for a key this tab was given"
        assert driver.find_element(By.ID, "nav").is_displayed()
        assert not driver.find_element(By.ID, "nav-admin").is_displayed()
        console.go("usage", "Usage")
        console.text_in("#usage-total", "2")
        console.go("history", "History")
        console.wait.until(lambda _: len(driver.find_elements(By.CSS_SELECTOR, '#history li[data-status="succeeded"]')) == 2)
        console.go("webhooks", "Webhooks")
        console.go("keys", "API keys")
        console.collect_console()
        assert not console.console_errors, f"browser console (ordinary user): {console.console_errors}"
        print(f"console: the browser flow passed; screenshots in {SHOTS}")
    except Exception:
        if driver is not None:
            print(f"at {driver.current_url}; the browser's console: {driver.get_log('browser')}", file=sys.stderr)
            driver.save_screenshot(os.path.join(SHOTS, "failure.png"))
        raise
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        google.terminate()
        server.wait(timeout=30)
        log.close()


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2])
