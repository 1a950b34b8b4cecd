"""The web client in a real browser: Selenium driving headless Chromium against ``bin/chat-server``.

Skipped, saying why, where Debian's ``chromium`` and ``chromium-driver`` (or selenium) are not
installed (``.ci/run`` installs them). Every wait is a bounded WebDriverWait on the page's state.
``CHATROOM_SCREENSHOTS=docs`` makes ``test_screenshots`` write docs/web-desktop.png and
docs/web-phone.png (the README shows them); otherwise they go to a temporary directory.
"""

import os
import shutil
import time

import pytest

from conftest import ROOT, WAIT, free_port
from test_client import ClientProcess

try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - the venv has it
    webdriver = None

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
MISSING = ("selenium is not installed" if webdriver is None else
           "chromium is not installed (apt-get install chromium)" if not CHROMIUM else
           "chromedriver is not installed (apt-get install chromium-driver)" if not CHROMEDRIVER else
           None)
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

#: The log as [class, sender, text] rows, read in the page.
LOG_JS = """return Array.from(document.querySelectorAll('#log li')).map(li => [
  li.className, li.querySelector('.from') ? li.querySelector('.from').textContent : null,
  li.querySelector('.text').textContent]);"""


@pytest.fixture
def browsers(tmp_path):
    """Factory: ``browsers(url, width=1280, height=800)`` opens a headless Chromium at ``url``."""
    made = []

    def open_page(url, width=1280, height=800):
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                     f"--window-size={width},{height}",
                     f"--user-data-dir={tmp_path / f'profile{len(made)}'}"):
            options.add_argument(flag)
        try:
            driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        except WebDriverException as err:
            pytest.skip(f"chromium would not start: {err.msg}")
        made.append(driver)
        driver.set_window_size(width, height)
        driver.get(url)
        wait_state(driver, "connected")
        return driver

    yield open_page
    for driver in made:
        driver.quit()


def wait_for(driver, condition, timeout=WAIT, what="condition"):
    # The page redraws lists as events arrive: an element read mid-redraw is stale, so look again.
    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: condition(d), f"page never met: {what}")


def wait_state(driver, state, timeout=WAIT):
    wait_for(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == state,
             timeout, f"state {state}")


def log_rows(driver):
    return driver.execute_script(LOG_JS)


def wait_line(driver, sender, text, timeout=WAIT):
    """Wait for a log line from ``sender`` (None: an event line) whose text is ``text``."""
    return wait_for(driver, lambda d: any(r[1] == sender and r[2] == text for r in log_rows(d)),
                    timeout, f"line {sender}: {text}")


def type_line(driver, text):
    """Type into the message box, which has the focus, and press Enter: what a user does."""
    box = driver.switch_to.active_element
    assert box.get_attribute("id") == "message", "the message box should have the focus"
    box.send_keys(text, Keys.ENTER)


def members(driver):
    return [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#members li")]


def set_nick(driver, nick):
    type_line(driver, "/nick " + nick)
    wait_for(driver, lambda d: nick in members(d), what=f"{nick} in the member list")


def web_server(start_server, *args):
    server = start_server("--web-port", "0", *args)
    server.web_port = int(server.wait_for(r"Web listening on 127\.0\.0\.1:(\d+)").group(1))
    server.url = f"http://127.0.0.1:{server.web_port}/"
    return server


@pytest.fixture
def terminal():
    made = []

    def start(port, *args):
        c = ClientProcess(port, *args)
        made.append(c)
        return c

    yield start
    for c in made:
        c.kill()


def test_two_browsers_and_a_terminal_chat_in_one_room_every_way(start_server, browsers, terminal):
    server = web_server(start_server)
    a, b = browsers(server.url), browsers(server.url)
    set_nick(a, "alice")
    set_nick(b, "bea")
    carl = terminal(server.port, "--nick", "carl")
    carl.connect()
    for page in (a, b):
        type_line(page, "/join dev")
        wait_for(page, lambda d: d.find_element(By.ID, "room-title").text == "dev", what="in dev")
    carl.type("JOIN dev")
    carl.expect_line("* carl joined dev")
    for page in (a, b):
        wait_for(page, lambda d: sorted(members(d)) == ["alice", "bea", "carl"], what="3 members")

    type_line(a, "hello from alice")
    wait_line(b, "alice", "hello from alice")
    carl.expect_line("[dev] alice: hello from alice")
    type_line(b, "hi from bea")
    wait_line(a, "bea", "hi from bea")
    carl.expect_line("[dev] bea: hi from bea")
    carl.type("SEND carl here")
    wait_line(a, "carl", "carl here")
    wait_line(b, "carl", "carl here")
    # Private messages: /msg from the page, TELL from the terminal.
    type_line(a, "/msg carl just you")
    carl.expect_line("[private] alice: just you")
    carl.type("TELL bea psst")
    wait_line(b, "carl → you", "psst")
    assert not any(r[2] == "psst" for r in log_rows(a))


def test_html_from_the_network_is_shown_as_text(start_server, browsers, terminal):
    server = web_server(start_server)
    page = browsers(server.url)
    set_nick(page, "reader")
    carl = terminal(server.port, "--nick", "carl")
    carl.connect()
    evil = "<script>window.pwned=1</script><img src=x onerror=\"window.pwned=2\"> <b>bold</b> &amp;"
    carl.type("SEND " + evil)
    wait_line(page, "carl", evil)
    assert page.execute_script(
        "return document.querySelectorAll('#log script, #log img, #log b').length") == 0
    assert page.execute_script("return window.pwned === undefined")
    # A nickname is checked by the server, but a member list shows names as text too.
    assert page.execute_script("return document.querySelectorAll('#members *:not(li)').length") == 0


def test_the_page_reconnects_after_a_server_restart(start_server, browsers):
    port = free_port()
    server = start_server("--web-port", port)
    server.wait_for(rf"Web listening on 127\.0\.0\.1:{port}")
    page = browsers(f"http://127.0.0.1:{port}/")
    set_nick(page, "phoenix")
    type_line(page, "/join ashes")
    wait_for(page, lambda d: d.find_element(By.ID, "room-title").text == "ashes", what="in ashes")
    assert server.stop() == 0
    wait_state(page, "reconnecting")
    again = start_server("--web-port", port)
    again.wait_for(rf"Web listening on 127\.0\.0\.1:{port}")
    back = time.monotonic()
    wait_state(page, "connected", timeout=5)  # the back-off is capped at 3 s
    assert time.monotonic() - back < 5
    # Back as it was: the same nickname, in the same room.
    wait_for(page, lambda d: members(d) == ["phoenix"], what="nickname restored")
    wait_for(page, lambda d: d.find_element(By.ID, "room-title").text == "ashes", what="room restored")


def test_keyboard_alone_sets_a_nickname_and_joins_a_room(start_server, browsers):
    server = web_server(start_server)
    page = browsers(server.url)
    # From the message box, Shift+Tab backwards reaches the room box; Enter submits.
    page.find_element(By.ID, "nick").send_keys("keys", Keys.ENTER)
    wait_for(page, lambda d: members(d) == ["keys"], what="nickname set")
    assert page.switch_to.active_element.get_attribute("id") == "message"
    page.find_element(By.ID, "room").send_keys("kbd", Keys.ENTER)
    wait_for(page, lambda d: d.find_element(By.ID, "room-title").text == "kbd", what="in kbd")
    assert page.switch_to.active_element.get_attribute("id") == "message"


def test_screenshots(start_server, browsers, terminal, tmp_path):
    """The page at desktop and phone width, after a short conversation (for the README)."""
    out = ROOT / "docs" if os.environ.get("CHATROOM_SCREENSHOTS") == "docs" else tmp_path
    server = web_server(start_server)
    desk = browsers(server.url, 1280, 800)
    phone = browsers(server.url, 390, 844)
    set_nick(desk, "alice")
    set_nick(phone, "bea")
    carl = terminal(server.port, "--nick", "carl")
    carl.connect()
    type_line(desk, "Hello, everyone!")
    wait_line(phone, "alice", "Hello, everyone!")
    type_line(phone, "Hi alice, writing from my phone")
    carl.type("SEND <b>tags</b> stay text: <script>alert(1)</script>")
    wait_line(desk, "carl", "<b>tags</b> stay text: <script>alert(1)</script>")
    type_line(desk, "/join dev")
    type_line(desk, "/join lobby")
    carl.type("TELL alice see you at 5")
    wait_line(desk, "carl → you", "see you at 5")
    wait_line(phone, "carl", "<b>tags</b> stay text: <script>alert(1)</script>")
    for page, name in ((desk, "web-desktop.png"), (phone, "web-phone.png")):
        wait_for(page, lambda d: [li.text for li in d.find_elements(By.CSS_SELECTOR, "#rooms li")]
                 == ["lobby (3)"], what="the room list up to date")
        assert page.get_screenshot_as_file(str(out / name))
        assert (out / name).stat().st_size > 1000
