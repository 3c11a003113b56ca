#!/usr/bin/env python3
"""The web console in a real browser: headless Chromium (Debian's chromium + chromium-driver)
driven by Selenium, against the real binary on SQLite with a fake Google.

sign up -> create a key (shown once, copied) -> playground generates an image, displayed ->
usage shows 1 -> history shows it -> delete it -> revoke the key -> admin lists the user ->
log out. Every page is photographed at desktop size and at 375 px wide into
target/console-screenshots/; the pages' Content-Security-Policy is checked, and the browser's
console must stay free of errors (CSP violations included) throughout.

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
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHOTS = os.path.join(ROOT, "target", "console-screenshots")
EMAIL = "console@example.com"
PASSWORD = "a console password"
DESKTOP = (1280, 900)
PHONE = (375, 812)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

    def shoot(self, name):
        """A desktop and a 375 px screenshot of the page as it is."""
        os.makedirs(SHOTS, exist_ok=True)
        for label, (width, height) in (("desktop", DESKTOP), ("375px", PHONE)):
            self.driver.set_window_size(width, height)
            time.sleep(0.2)
            # The page must not need sideways scrolling on a phone (tables scroll in their box).
            if label == "375px":
                overflow = self.driver.execute_script(
                    "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
                assert overflow <= 1, f"{name}: {overflow} px wider than a 375 px screen"
            self.driver.save_screenshot(os.path.join(SHOTS, f"{name}-{label}.png"))
        self.driver.set_window_size(*DESKTOP)
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
    google = subprocess.Popen([fake_google, f"127.0.0.1:{google_port}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    env = dict(os.environ, NB_LISTEN=f"127.0.0.1:{port}", NB_DATA_DIR=work, NB_BCRYPT_COST="4",
               GOOGLE_API_KEY="console-google-key", GOOGLE_GEMINI_BASE_URL=f"http://127.0.0.1:{google_port}",
               NB_ADMIN_EMAILS=EMAIL, JWT_SECRET=secrets.token_hex(32), RUST_LOG="warn")
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

        # Sign up (an error first: shown next to its field, in words). Signed out, there is no
        # navigation and no "Log out"; the page's heading has focus, with no frame drawn.
        driver.get(f"{base}/console")
        console.heading("Log in")
        console.signed_out_chrome()
        console.shoot("login")
        driver.find_element(By.LINK_TEXT, "Create an account").click()
        console.heading("Create an account")
        console.fill("#email", "not an email")
        console.fill("#password", PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        console.text_in("#email-error", "email")
        assert driver.find_element(By.CSS_SELECTOR, "#email").get_attribute("aria-invalid") == "true"
        console.shoot("signup-error")
        console.fill("#email", EMAIL)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        console.heading("API keys")
        cookies = {cookie["name"]: cookie for cookie in driver.get_cookies()}
        assert cookies["nb_session"]["httpOnly"] and cookies["nb_session"]["sameSite"] == "Strict", cookies
        assert not driver.execute_script("return document.cookie").count("nb_session"), "the token is readable"

        # A key: a budget that is not an amount is refused, naming the field; then the key is
        # created with a monthly budget, shown in full once, copied.
        console.fill("#key-name", "console")
        console.fill("#key-budget", "ten")
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        console.text_in("#key-budget-error", "amount of US dollars")
        assert driver.find_element(By.CSS_SELECTOR, "#key-budget").get_attribute("aria-invalid") == "true"
        console.fill("#key-budget", "5")
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        shown = console.find("#new-key input").get_attribute("value")
        assert re.fullmatch(r"nb_live_[0-9a-f]{32}", shown), shown
        assert "you will not see it again" in console.find("#new-key").text
        console.find("#copy-key").click()
        console.text_in("#new-key", "Copied.")
        console.text_in("#keys", shown[:12])
        console.text_in("#keys", "$5.00/month")
        console.shoot("keys")

        # The playground makes an image with that key (the fake Google's PNG) and shows it.
        console.go("playground", "Playground")
        assert console.find("#api-key").get_attribute("value") == shown
        console.fill("#prompt", "a banana on the moon")
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        image = console.find("#generated-image")
        console.wait.until(lambda _: driver.execute_script(
            "const i = document.getElementById('generated-image'); return i.complete && i.naturalWidth > 0;"))
        console.text_in("#result", "Made in")
        # What it cost: 1120 image tokens at $60 and 12 prompt tokens at $0.50 a million.
        console.text_in("#result", "$0.0672")
        assert image.get_attribute("src").startswith(f"{base}/images/")
        console.shoot("playground")

        # Usage: one image today.
        console.go("usage", "Usage")
        console.text_in("#usage-total", "1")
        today = driver.execute_script("return new Date().toISOString().slice(0, 10)")
        bar = driver.find_element(By.CSS_SELECTOR, f'#usage-chart g[data-day="{today}"]')
        assert bar.get_attribute("data-count") == "1"
        # Spend per day, in micro-dollars: $0.067206.
        console.text_in("#spend-total", "$0.0672")
        spend = driver.find_element(By.CSS_SELECTOR, f'#spend-chart g[data-day="{today}"]')
        assert spend.get_attribute("data-count") == "67206", spend.get_attribute("data-count")
        console.text_in("#usage-keys", "$0.0672")
        console.shoot("usage")

        # History shows it; delete it.
        console.go("history", "History")
        card = console.find('#history li[data-status="succeeded"]')
        assert "a banana on the moon" in card.text
        assert "$0.0672" in card.text, card.text
        console.wait.until(lambda _: driver.execute_script(
            "const i = document.querySelector('#history img'); return i && i.complete && i.naturalWidth > 0;"))
        console.shoot("history")

        # "Edit this image" continues it in the playground, which offers the model's ratios.
        card.find_element(By.XPATH, ".//button[text()='Edit this image']").click()
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
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        console.text_in("#result", "16:9")
        console.go("history", "History")
        console.wait.until(lambda _: len(driver.find_elements(By.CSS_SELECTOR, '#history li[data-status="succeeded"]')) == 2)
        card = console.find('#history li[data-status="succeeded"]')
        card.find_element(By.XPATH, ".//button[text()='Delete']").click()
        console.accept_confirm()
        console.find('#history li[data-status="deleted"]')

        # A job submitted with the key (Prefer: respond-async) shows in the history, which
        # reads it again while it is queued or running, until it has succeeded.
        request = urllib.request.Request(f"{base}/v1/generate", data=json.dumps({"prompt": "a job"}).encode(),
                                         headers={"Authorization": f"Bearer {shown}", "Prefer": "respond-async",
                                                  "Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request) as answer:
            assert answer.status == 202, answer.status
        console.go("keys", "API keys")
        console.go("history", "History")
        console.wait.until(lambda _: any(
            "a job" in card.text for card in driver.find_elements(By.CSS_SELECTOR, '#history li[data-status="succeeded"]')))

        # Revoke the key: the full key is not shown again, and the key is refused from then on.
        # Its spend this month is shown beside it (two images).
        console.go("keys", "API keys")
        console.text_in("#keys", "$0.2016")
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

        # Admin (this account is in NB_ADMIN_EMAILS).
        console.go("admin", "Admin: users")
        console.text_in("#users", EMAIL)
        row = console.find(f'#users tr[data-email="{EMAIL}"]')
        per_day = row.find_element(By.CSS_SELECTOR, "input.limit")
        per_day.send_keys("25")
        # Its spend so far, and a monthly budget in dollars beside the image quotas.
        assert "$0.2016" in row.text, row.text
        row.find_element(By.CSS_SELECTOR, "input.budget").send_keys("100")
        row.find_element(By.XPATH, ".//button[text()='Save']").click()
        console.wait.until(lambda _: "saved" in driver.find_element(By.ID, "status").get_attribute("textContent"))
        console.go("keys", "API keys")
        console.go("admin", "Admin: users")
        saved = console.find(f'#users tr[data-email="{EMAIL}"] input.limit').get_attribute("value")
        assert saved == "25", saved
        budget = console.find(f'#users tr[data-email="{EMAIL}"] input.budget').get_attribute("value")
        assert budget == "100", budget
        console.shoot("admin")

        # Webhooks: an endpoint, its signing secret shown once with Copy, then deleted.
        console.go("webhooks", "Webhooks")
        console.fill("#webhook-url", "https://hooks.example.com/nanobanana")
        driver.find_element(By.CSS_SELECTOR, "#new-webhook button[type=submit]").click()
        secret = console.find("#new-secret input").get_attribute("value")
        assert secret.startswith("whsec_"), secret
        console.text_in("#webhooks", "hooks.example.com/nanobanana")
        console.text_in("#webhooks", "generation.succeeded")
        console.shoot("webhooks")
        console.go("keys", "API keys")
        console.go("webhooks", "Webhooks")
        console.text_in("#webhooks", "hooks.example.com/nanobanana")
        assert not driver.find_elements(By.CSS_SELECTOR, "#new-secret"), "the secret was shown again"
        console.find("#webhooks li button.danger").click()
        console.accept_confirm()
        console.text_in("#webhooks", "No endpoints yet.")

        # Log out: the session is over, and the navigation is gone.
        driver.find_element(By.CSS_SELECTOR, "#logout").click()
        console.heading("Log in")
        console.signed_out_chrome()
        status = driver.execute_script(
            "return fetch('/v1/auth/me', {credentials: 'same-origin'}).then(r => r.status)")
        assert status == 401, status

        # An ordinary user (not an operator): no Admin link, and no admin route is asked (it
        # would answer 403, an error in the browser's console), neither at sign-up nor after a
        # reload.
        driver.find_element(By.LINK_TEXT, "Create an account").click()
        console.heading("Create an account")
        console.fill("#email", "ordinary@example.com")
        console.fill("#password", PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        console.heading("API keys")
        assert not driver.find_element(By.ID, "nav-admin").is_displayed(), "an Admin link for a user"
        driver.refresh()
        console.heading("API keys")
        assert driver.find_element(By.ID, "nav").is_displayed()
        assert not driver.find_element(By.ID, "nav-admin").is_displayed()
        console.go("usage", "Usage")
        console.go("history", "History")
        console.collect_console()
        assert not console.console_errors, f"browser console: {console.console_errors}"
        print(f"console: the browser flow passed; screenshots in {SHOTS}")
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        google.terminate()
        server.wait(timeout=30)
        log.close()


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2])
