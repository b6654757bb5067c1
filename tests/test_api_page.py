"""The on-call page in headless Chromium (Debian's chromium + chromedriver, driven by Selenium), served by a running
``sentinel api``: it lists an incident the flow raised, updates live, shows its evidence and hints, hides the
buttons from a viewer, and a silence made from the page goes, signed, to the control topic the flow applies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import yaml
from bytewax.testing import run_main
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from flows import build_flow
from operators.silences import Controls
from sentinel.auth import make_token
from sentinel.config import load_config
from sentinel.control import ControlHandler
from sentinel.core.times import iso
from sentinel.core.types import Alert
from simulator import DEFAULT_START, Simulator
from sentinel.store import Store
from devtools.tansu import free_port
from test_api import read_topic
from test_incident_store import alert

ROOT = Path(__file__).resolve().parents[1]
SECRET = "page-secret-" + "p" * 40
KEY = "page-control-key-" + "c" * 20


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.fail("chromium and chromedriver are not installed (apt-get install chromium chromium-driver; "
                    ".ci/run installs them)", pytrace=False)
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(a)
    b = webdriver.Chrome(service=Service(driver), options=opts)
    try:
        yield b
    finally:
        b.quit()


def test_page_lists_the_flows_incident_and_silences_from_it(tmp_path: Path, tansu: str, kafka_topic,
                                                             browser: webdriver.Chrome) -> None:
    control, feedback = kafka_topic(1, "control"), kafka_topic(1, "feedback")
    events = tmp_path / "events.jsonl"
    inc = {"type": "latency", "service": "support-bot", "model": "gpt-4o-mini",
           "start": DEFAULT_START + 100 * 60, "end": DEFAULT_START + 121 * 60, "magnitude": 5}  # open at the end
    Simulator(seed=4, hours=2.0, rate=8.0, incidents=[inc]).write(str(events), None)
    port = free_port()
    flow = {"name": "page", "source": {"kind": "file", "path": str(events)},
            "sinks": [{"kind": "incident_store", "url": str(tmp_path / "inc.db"), "spool_dir": str(tmp_path / "sp")}],
            "metrics": {"port": 0},
            "control": {"brokers": tansu, "topic": control, "feedback_topic": feedback,
                        "hmac_key_env": "SENTINEL_PAGE_CONTROL_KEY"},
            "api": {"port": port, "auth": {"secret_env": "SENTINEL_PAGE_SECRET"}, "stream_poll": "200ms"}}
    path = tmp_path / "flow.yaml"
    path.write_text(yaml.safe_dump(flow))
    run_main(build_flow(load_config(path)))  # the flow raises the incident into the store
    store = Store(str(tmp_path / "inc.db"))
    assert store.list_incidents(service="support-bot", type="latency", status=["open"])[0] == 1

    env = dict(os.environ, SENTINEL_PAGE_SECRET=SECRET, SENTINEL_PAGE_CONTROL_KEY=KEY)
    log = open(tmp_path / "api.log", "w")
    api = subprocess.Popen([sys.executable, "-m", "sentinel.cli", "api", "-c", str(path)], cwd=ROOT, env=env,
                           stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                if httpx.get(base + "/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                assert api.poll() is None, (tmp_path / "api.log").read_text()
            time.sleep(0.2)
        wait = WebDriverWait(browser, 20)

        # A viewer sees the incident and its evidence, and no buttons.
        viewer = make_token(SECRET.encode(), "vera", "viewer", 600)
        browser.get(f"{base}/#token={viewer}")
        row = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "tr.incident")))
        assert "support-bot" in row.text and "latency" in row.text
        assert "token=" not in browser.current_url  # the token leaves the address bar
        row.click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "detail"), "Evidence"))
        assert "Root-cause hints" in browser.find_element(By.ID, "detail").text
        assert browser.find_elements(By.ID, "silence-btn") == []
        assert "vera (viewer)" in browser.find_element(By.ID, "who").text

        # An operator: a new incident appears live; a silence made from the page reaches the control topic.
        operator = make_token(SECRET.encode(), "otto", "operator", 600)
        browser.find_element(By.ID, "logout").click()
        wait.until(EC.visibility_of_element_located((By.ID, "token-input")))
        browser.get(f"{base}/#token={operator}")
        browser.refresh()  # the address differs from the page's only in its fragment: load it again
        wait.until(EC.text_to_be_present_in_element((By.ID, "who"), "otto (operator)"))
        wait.until(EC.text_to_be_present_in_element((By.ID, "status"), "live"))
        store.store_alerts([alert(service="chat-api", fingerprint="live-" + uuid.uuid4().hex,
                                  event_time=iso(time.time()))])
        wait.until(EC.text_to_be_present_in_element((By.ID, "incidents"), "chat-api"))
        rows = browser.find_elements(By.CSS_SELECTOR, "tr.incident")
        next(r for r in rows if "support-bot" in r.text).click()
        wait.until(EC.element_to_be_clickable((By.ID, "silence-btn"))).click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "action-result"), "silenced: api-"))
        sid = browser.find_element(By.ID, "action-result").text.split(": ", 1)[1]
        assert store.get_silence(sid)["created_by"] == "otto"

        (msg,) = read_topic(tansu, control, 1)
        controls = Controls()
        assert ControlHandler(controls, control_topic=control, key=KEY.encode()).handle(
            control, msg.value(), msg.headers(), "page")
        now = iso(time.time())
        assert controls.silenced_by(Alert.from_json(alert(service="support-bot", type="latency", event_time=now))).id \
            == sid
        assert controls.silenced_by(Alert.from_json(alert(service="support-bot", type="cost", event_time=now))) is None
    finally:
        api.terminate()
        try:
            api.wait(20)
        finally:
            if api.poll() is None:
                api.kill()
            log.close()
        api_log = (tmp_path / "api.log").read_text()
        assert api.returncode in (0, -15), api_log[-2000:]  # uvicorn re-raises SIGTERM once it has shut down
        assert viewer not in api_log and "token=<redacted>" in api_log  # no token in the logs
