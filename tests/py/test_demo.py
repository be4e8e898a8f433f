"""End-to-end tests of the demo page (src/server/static/) in a real headless
Chromium driven by Selenium, against a live faceverifyd in demo mode.

Debian's `chromium` and `chromium-driver` are used (scripts/bootstrap.sh
installs them); Selenium is pointed at /usr/bin/chromedriver and
/usr/bin/chromium so that Selenium Manager never looks for, or downloads,
a browser or driver.  Tests skip when the browser or Selenium is missing
(fail instead under FACEVERIFY_REQUIRE_BROWSER=1, which .ci/run sets), and skip (fail under FACEVERIFY_REQUIRE_DATA=1) when the photos are.

A screenshot of each state is saved under build/test-artifacts/demo/
($FACEVERIFY_BUILD/test-artifacts/demo); the path is printed.
"""
import os
import re
import shutil
from pathlib import Path

import pytest
import requests

from conftest import BUILD, DATA, need
from fvserver import Server, create_collection, daemon_cmd, free_port, new_db_url

CHROMIUM = os.environ.get("FACEVERIFY_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("FACEVERIFY_CHROMEDRIVER", "/usr/bin/chromedriver")
ARTIFACTS = BUILD / "test-artifacts" / "demo"
# Embedding takes 0.3-2 s per photo on a small shared CPU; allow plenty.
WAIT = 120


def sample(rel: str) -> Path:
    return need(DATA / "samples" / rel)


def _no_browser(reason: str):
    if os.environ.get("FACEVERIFY_REQUIRE_BROWSER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def _selenium():
    try:
        import selenium  # noqa: F401
    except ImportError as e:
        _no_browser(f"selenium not installed: {e}")
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not (shutil.which(exe) or Path(exe).exists()):
            _no_browser(f"{exe} not found (apt-get install chromium chromium-driver)")


def make_driver(width=1280, height=1000, fake_camera=True):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # Belt and braces: Selenium Manager stays offline even if it were run.
    os.environ["SE_OFFLINE"] = "true"
    os.environ["SE_AVOID_STATS"] = "true"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--no-first-run", "--disable-extensions", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--hide-scrollbars",
              f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if fake_camera:
        opts.add_argument("--use-fake-device-for-media-stream")
        opts.add_argument("--use-fake-ui-for-media-stream")
    service = Service(executable_path=CHROMEDRIVER)
    d = webdriver.Chrome(service=service, options=opts)
    d.set_page_load_timeout(60)
    return d


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A migrated SQLite database and a faceverifyd with --demo."""
    _selenium()
    tmp = tmp_path_factory.mktemp("demo")
    url = new_db_url("sqlite", tmp)
    daemon_cmd("migrate", db_url=url)
    srv = Server(url, env={"FACEVERIFY_DEMO": "1"}, max_body=12_000_000)
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def browser(demo):
    d = make_driver()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\ndemo screenshots: {ARTIFACTS}")
    yield d
    d.quit()


def shot(driver, name: str) -> Path:
    """Saves a screenshot of the whole page (not just the window)."""
    import base64

    w, h = driver.execute_script("const e = document.documentElement;"
                                 "return [e.scrollWidth, e.scrollHeight];")
    data = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}})["data"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    path.write_bytes(base64.b64decode(data))
    return path


def wait(driver, cond, timeout=WAIT):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(cond)


def text_of(driver, css):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css).text


def idle(driver):
    """True when the page has no request in flight."""
    return driver.execute_script("return document.body.dataset.busy || '0'") == "0"


def open_page(driver, srv):
    driver.get(srv.base + "/")
    wait(driver, lambda d: d.execute_script("return document.body.dataset.ready") == "1", 30)


def choose(driver, css, path: Path):
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, css).send_keys(str(path))


def verify_pair(driver, srv, a: Path, b: Path):
    open_page(driver, srv)
    choose(driver, "#file-a", a)
    choose(driver, "#file-b", b)
    wait(driver, lambda d: idle(d) and (
        d.execute_script("return !document.getElementById('verify-result').hidden")
        or text_of(d, "#error-a") or text_of(d, "#error-b")))


# ------------------------------------------------------------ verify

def test_verify_same_person(demo, browser):
    verify_pair(browser, demo, sample("openface/clapton-1.jpg"), sample("openface/clapton-2.jpg"))
    assert text_of(browser, "#verdict") == "Same person"
    dist = float(text_of(browser, "#distance"))
    thr = float(text_of(browser, "#threshold"))
    assert 0 < dist <= thr
    # Both aligned chips are PNG data URLs that the browser decoded at 150x150.
    for chip in ("chip-a", "chip-b"):
        w, src = browser.execute_script(
            f"const i = document.getElementById('{chip}'); return [i.naturalWidth, i.src];")
        assert src.startswith("data:image/png;base64,") and w == 150
    # The photo was drawn with its face box on the canvas, at the image's size.
    cw = browser.execute_script("return document.querySelector('[data-slot=a] canvas').width")
    assert cw == 624  # clapton-1.jpg is 624x420
    assert "detect" in text_of(browser, "#timings") and "embed" in text_of(browser, "#timings")
    assert re.search(r"Face quality: [01]\.\d\d.* and [01]\.\d\d", text_of(browser, "#timings"))
    assert text_of(browser, "#error-a") == "" and text_of(browser, "#error-b") == ""
    # No script error and no Content-Security-Policy violation on the way.
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe
    shot(browser, "verify-same")


def test_verify_public_domain_pair(demo, browser, tmp_path):
    """The README's screenshot (docs/img/demo-verify.png is a copy of
    verify-readme.png): only a public-domain photo (NASA's astronaut.jpg)
    against a mirrored, tilted, rescaled crop of itself."""
    from PIL import Image

    src = sample("skimage/astronaut.jpg")
    im = Image.open(src).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    im = im.rotate(8, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=(40, 40, 40))
    im = im.crop((60, 0, 512, 400)).resize((339, 300), Image.Resampling.LANCZOS)
    other = tmp_path / "astronaut-variant.jpg"
    im.save(other, quality=85)
    verify_pair(browser, demo, src, other)
    assert text_of(browser, "#verdict") == "Same person"
    assert 0.05 < float(text_of(browser, "#distance")) < float(text_of(browser, "#threshold"))
    shot(browser, "verify-readme")


def test_verify_different_people(demo, browser):
    verify_pair(browser, demo, sample("openface/lennon-1.jpg"), sample("openface/adams.jpg"))
    assert text_of(browser, "#verdict") == "Different people"
    assert float(text_of(browser, "#distance")) > float(text_of(browser, "#threshold"))
    shot(browser, "verify-different")


def test_verify_no_face(demo, browser):
    verify_pair(browser, demo, sample("openface/clapton-1.jpg"), sample("skimage/coffee.png"))
    assert "No face found" in text_of(browser, "#error-b")
    assert text_of(browser, "#error-a") == ""
    assert browser.execute_script("return document.getElementById('verify-result').hidden")
    shot(browser, "verify-no-face")


def test_verify_unreadable_file(demo, browser, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"this is not an image\n" * 20)
    verify_pair(browser, demo, bad, sample("openface/clapton-1.jpg"))
    assert "could not be read as an image" in text_of(browser, "#error-a")
    shot(browser, "verify-unreadable")


def test_too_large_file(demo, browser, tmp_path):
    """A file over the server's body limit is refused in the page, before
    any upload, in plain words next to its slot."""
    big = tmp_path / "huge.jpg"
    big.write_bytes(b"\xff" * 12_500_000)
    open_page(browser, demo)
    choose(browser, "#file-b", big)
    wait(browser, lambda d: text_of(d, "#error-b"), 30)
    assert "too large" in text_of(browser, "#error-b")
    shot(browser, "verify-too-large")


def test_phone_width_and_keyboard(demo):
    d = make_driver()
    try:
        # A phone-sized viewport (headless windows have a minimum width).
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                          {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
        open_page(d, demo)
        ya, yb = d.execute_script(
            "return ['a','b'].map(s => document.querySelector(`[data-slot=${s}]`)"
            ".getBoundingClientRect().top)")
        assert yb > ya + 100, "the two photo slots stack on a phone-sized screen"
        assert d.execute_script("return document.documentElement.scrollWidth") <= 390
        # Keyboard: the tabs answer the arrow keys, the file inputs take focus.
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        tab = d.find_element(By.ID, "tab-verify")
        tab.send_keys(Keys.ARROW_RIGHT)
        assert d.find_element(By.ID, "tab-identify").get_attribute("aria-selected") == "true"
        assert not d.find_element(By.ID, "panel-identify").get_attribute("hidden")
        # Tab from there reaches the name field, its button and the photo input.
        from selenium.webdriver.common.action_chains import ActionChains

        seen = []
        for _ in range(12):
            ActionChains(d).send_keys(Keys.TAB).perform()
            seen.append(d.switch_to.active_element.get_attribute("id") or
                        d.switch_to.active_element.text)
        assert "subject-name" in seen and "Add person" in seen and "file-probe" in seen, seen
        shot(d, "phone")
    finally:
        d.quit()


def test_camera_snapshot(demo, browser):
    """Chromium's fake camera (a test pattern) fills a slot via getUserMedia."""
    from selenium.webdriver.common.by import By

    open_page(browser, demo)
    browser.find_element(By.CSS_SELECTOR, "[data-slot=a] .cam").click()
    wait(browser, lambda d: d.find_element(By.ID, "camera-shoot").is_enabled() and
         d.execute_script("return document.getElementById('camera-video').videoWidth") > 0, 30)
    shot(browser, "camera")
    browser.find_element(By.ID, "camera-shoot").click()
    wait(browser, lambda d: d.execute_script(
        "return document.querySelector('[data-slot=a] .drop').classList.contains('filled')"), 30)
    assert not browser.execute_script("return document.getElementById('camera').open")


def test_no_camera_message(demo):
    """Without a camera device the dialog says so in plain words."""
    from selenium.webdriver.common.by import By

    d = make_driver(fake_camera=False)
    try:
        open_page(d, demo)
        d.find_element(By.CSS_SELECTOR, "[data-slot=a] .cam").click()
        wait(d, lambda d: text_of(d, "#camera-error"), 30)
        msg = text_of(d, "#camera-error")
        assert "No camera was found" in msg or "permission was denied" in msg, msg
    finally:
        d.quit()


# ------------------------------------------------------------ enroll and identify

def enroll(driver, name: str, photo: Path):
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, "subject-name")
    field.clear()
    field.send_keys(name)
    driver.find_element(By.CSS_SELECTOR, "#subject-form button[type=submit]").click()
    li = f'#subjects li[data-name="{name}"]'
    wait(driver, lambda d: idle(d) and d.find_elements(By.CSS_SELECTOR, li))
    choose(driver, f"{li} input.enroll", photo)
    wait(driver, lambda d: idle(d) and (text_of(d, f"{li} .count") != "0 photos"
                                        or text_of(d, f"{li} .error")))


def test_enroll_and_identify_group(demo, browser):
    from selenium.webdriver.common.by import By

    open_page(browser, demo)
    browser.find_element(By.ID, "tab-identify").click()
    wait(browser, idle)
    enroll(browser, "Bradley Cooper", sample("facenet_pytorch_aligned/bradley_cooper.png"))
    enroll(browser, "Kate Siegel", sample("facenet_pytorch/kate_siegel.jpg"))
    for name in ("Bradley Cooper", "Kate Siegel"):
        assert text_of(browser, f'#subjects li[data-name="{name}"] .count') == "1 photo"
    # A group photo cannot be enrolled as one person: a plain-words error.
    li = '#subjects li[data-name="Kate Siegel"]'
    choose(browser, f"{li} input.enroll", sample("openface/longoria-cooper.jpg"))
    wait(browser, lambda d: idle(d) and text_of(d, f"{li} .error"))
    assert "Several faces" in text_of(browser, f"{li} .error")
    assert text_of(browser, f"{li} .count") == "1 photo"
    # Identify the group photo: Cooper is found, Eva Longoria is not enrolled.
    choose(browser, "#file-probe", sample("openface/longoria-cooper.jpg"))
    wait(browser, lambda d: idle(d) and (d.find_elements(By.CSS_SELECTOR, "#faces > li")
                                         or text_of(d, "#error-probe")))
    labels = [li.get_attribute("data-label")
              for li in browser.find_elements(By.CSS_SELECTOR, "#faces > li")]
    assert sorted(labels) == ["Bradley Cooper", "Unknown"], labels
    cands = text_of(browser, "#faces")
    assert "Kate Siegel: score" in cands and "Bradley Cooper: score" in cands  # open set
    assert "2 faces" in text_of(browser, "#identify-timings")
    shot(browser, "identify-group")
    # Delete a person (confirm dialog) and the list follows.
    browser.find_element(By.CSS_SELECTOR, f'{li} button[aria-label="Delete Kate Siegel"]').click()
    browser.switch_to.alert.accept()
    wait(browser, lambda d: idle(d) and not d.find_elements(By.CSS_SELECTOR, li))
    r = requests.get(demo.url("/api/v1/subjects"), timeout=30)
    assert r.status_code == 401  # the listing needs the key or the page's token


# ------------------------------------------------------------ access rules

def page_token(srv) -> str:
    r = requests.get(srv.url("/"), timeout=30)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    m = re.search(r'name="fv-demo-token" content="([0-9a-f]{64})"', r.text)
    assert m, r.text[:300]
    return m.group(1)


def test_static_files(demo):
    r = requests.get(demo.url("/static/app.js"), timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/javascript")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    etag = r.headers["ETag"]
    r2 = requests.get(demo.url("/static/app.js"), headers={"If-None-Match": etag}, timeout=30)
    assert r2.status_code == 304 and r2.content == b""
    assert requests.get(demo.url("/static/app.css"), timeout=30).headers[
        "Content-Type"].startswith("text/css")
    for bad in ("/static/../main.c", "/static/%2e%2e/main.c", "/static/..%2fmain.c",
                "/static/.hidden.js", "/static/main.c", "/static/"):
        assert requests.get(demo.url(bad), timeout=30).status_code == 404, bad
    page = requests.get(demo.url("/"), timeout=30)
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page.text), "external resource"


def test_cross_site_requests_refused(demo):
    tok = page_token(demo)
    h = {"X-Demo-Token": tok}
    assert requests.get(demo.url("/api/v1/subjects"), headers=h, timeout=30).status_code == 200
    cases = [
        ({}, 401),                                            # no token, no key
        ({"X-Demo-Token": "0" * 64}, 401),                    # wrong token
        ({**h, "Origin": "http://evil.example"}, 403),        # foreign origin
        ({**h, "Sec-Fetch-Site": "cross-site"}, 403),
        ({**h, "Host": f"evil.example:{demo.port}"}, 403),    # DNS rebinding
    ]
    for headers, status in cases:
        r = requests.get(demo.url("/api/v1/subjects"), headers=headers, timeout=30)
        assert r.status_code == status, (headers, r.text)
        assert r.json()["error"]["code"] in ("unauthorized", "forbidden")
    # A page under a foreign host name never gets the token.
    r = requests.get(demo.url("/"), headers={"Host": f"evil.example:{demo.port}"}, timeout=30)
    assert r.status_code == 403 and tok not in r.text


def test_cross_origin_page_cannot_call_demo(demo, browser):
    """A real browser on another origin (localhost vs 127.0.0.1): even holding
    the token, its fetch needs a CORS preflight that the server never grants."""
    tok = page_token(demo)
    browser.get(f"http://localhost:{demo.port}/static/demo-off.html")
    res = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"fetch('{demo.base}/api/v1/subjects', {{headers: {{'X-Demo-Token': '{tok}'}}}})"
        ".then(r => done('status ' + r.status)).catch(e => done('blocked: ' + e.name));")
    assert res.startswith("blocked"), res


def test_demo_off_by_default(tmp_path, monkeypatch):
    _selenium()
    monkeypatch.delenv("FACEVERIFY_DEMO", raising=False)
    url = new_db_url("sqlite", tmp_path)
    daemon_cmd("migrate", db_url=url)
    srv = Server(url)
    try:
        r = requests.get(srv.url("/"), timeout=30)
        assert r.status_code == 404 and "demo is switched off" in r.text
        assert "fv-demo-token" not in r.text
        assert requests.get(srv.url("/api/v1/subjects"), timeout=30).status_code == 401
        r = requests.get(srv.url("/api/v1/subjects"), headers={"X-Demo-Token": "0" * 64},
                         timeout=30)
        assert r.status_code == 401 and "demo mode is off" in r.json()["error"]["message"]
    finally:
        assert srv.stop() == 0
    # No demo collection was made: the name is still free.
    daemon_cmd("createcollection", "demo", db_url=url)


def test_demo_refuses_a_key_holders_demo_collection(tmp_path):
    """Issue 16 point 10: demo mode never takes over a collection named
    "demo" that a key holder made: serve --demo exits 1 with a message and
    that collection's key keeps working; a collection demo mode made itself
    is reused across restarts (with a new hidden key each time)."""
    url = new_db_url("sqlite", tmp_path)
    daemon_cmd("migrate", db_url=url)
    key = create_collection(url, "demo")
    p = daemon_cmd("serve", "--listen", f"127.0.0.1:{free_port()}", db_url=url, check=False,
                   env={"FACEVERIFY_DEMO": "1"}, timeout=60)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert "demo mode did not make" in p.stderr, p.stderr
    srv = Server(url)
    try:
        r = srv.request("GET", "/api/v1/subjects", key)
        assert r.status_code == 200, r.text
    finally:
        assert srv.stop() == 0

    url2 = new_db_url("sqlite", tmp_path)
    daemon_cmd("migrate", db_url=url2)
    for _ in range(2):  # made by demo mode, then found again
        srv = Server(url2, env={"FACEVERIFY_DEMO": "1"})
        try:
            assert "collection 'demo'" in srv.output()
            assert requests.get(srv.url("/api/v1/health"), timeout=30).status_code in (200, 503)
        finally:
            assert srv.stop() == 0


# ------------------------------------------------------------ people (issue 19)

# Three people, three LFW photos each, chosen so that each person's photos
# are close (at most 0.44 apart) and other people's far (0.79 or more); and
# Venus Williams, who the model puts within 0.47 of her sister: the wrong
# match that "not this person" corrects.
PEOPLE = {"Colin_Powell": (1, 4, 5), "Serena_Williams": (1, 2, 4), "Jennifer_Aniston": (2, 4, 5)}
FACES_ROUTES = (("post", "/api/v1/faces"), ("post", "/api/v1/faces/assign"),
                ("post", "/api/v1/subjects/{id}/merge"))
CLUSTER_ROUTE = ("post", "/api/v1/faces/cluster")
NOT_ROUTE = ("post", "/api/v1/subjects/{id}/not")


def lfw_photo(person: str, i: int) -> Path:
    return need(DATA / "lfw" / person / f"{person}_{i:04d}.jpg")


def person_of(photo: str) -> str:
    return photo.rsplit("_", 1)[0]


@pytest.fixture(params=["sqlite", "pg"])
def people_demo(request, tmp_path):
    """A demo server of the test's own, on SQLite and on PostgreSQL (the
    view's moves and merges are transactions there): its collection holds
    only the test's photos (the module's demo server has others)."""
    _selenium()
    url = new_db_url(request.param, tmp_path)
    daemon_cmd("migrate", db_url=url)
    srv = Server(url, env={"FACEVERIFY_DEMO": "1"}, max_body=12_000_000)
    yield srv
    assert srv.stop() == 0


def need_routes(srv, *routes):
    """Skips, naming the route, when this build has not got it yet (the
    backend of issue 19 lands in parts)."""
    spec = requests.get(srv.url("/api/openapi.json"), timeout=30).json()
    for method, path in routes:
        if method not in spec["paths"].get(path, {}):
            pytest.skip(f"needs {method.upper()} {path}")


def groups(driver, where: str):
    """The face cards under #clusters, #noise or #people: each one's name,
    subject id, face ids and photo file names."""
    return driver.execute_script("""
        return [...document.querySelectorAll(arguments[0] + ' > .group')].map(g => ({
          name: g.dataset.name || null, id: g.dataset.id ? Number(g.dataset.id) : null,
          faces: [...g.querySelectorAll('li.face')].map(li => Number(li.dataset.faceId)),
          photos: [...g.querySelectorAll('li.face')].map(li => li.dataset.photo || null)}));
    """, where)


def people_of(driver):
    """{name: sorted photo file names} of the named people."""
    return {g["name"]: sorted(g["photos"]) for g in groups(driver, "#people")}


def photos(person: str, idx=None):
    return sorted(f"{person}_{i:04d}.jpg" for i in (idx or PEOPLE[person]))


def people_action(driver, act):
    """Runs act() (a click or a key) and waits for the People view to have
    reloaded from the server after it."""
    v = driver.execute_script("return document.getElementById('panel-people').dataset.version")
    act()
    wait(driver, lambda d: idle(d) and d.execute_script(
        "return document.getElementById('panel-people').dataset.version") != v)


def card(driver, where: str, pred):
    """The WebElement of the first card under where whose data satisfies pred."""
    from selenium.webdriver.common.by import By

    for i, g in enumerate(groups(driver, where)):
        if pred(g):
            return driver.find_elements(By.CSS_SELECTOR, f"{where} > .group")[i]
    raise AssertionError(f"no such card under {where}: {groups(driver, where)}")


def cluster_of(driver, person):
    return card(driver, "#clusters", lambda g: {person_of(p) for p in g["photos"]} == {person})


def name_card(driver, el, name, keyboard=False):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    field = el.find_element(By.CSS_SELECTOR, "form input[list]")
    field.clear()
    field.send_keys(name)
    people_action(driver, lambda: field.send_keys(Keys.ENTER) if keyboard else
                  el.find_element(By.CSS_SELECTOR, "form button[type=submit]").click())


def identify_after(driver, act):
    """Runs act() and waits for the identify answer it leads to; no error."""
    seq = driver.execute_script("return document.getElementById('faces').dataset.seq || ''")
    act()
    wait(driver, lambda d: idle(d) and (
        d.execute_script("return document.getElementById('faces').dataset.seq || ''") != seq
        or text_of(d, "#error-probe")))
    assert text_of(driver, "#error-probe") == ""


def identify_photo(driver, photo: Path):
    identify_after(driver, lambda: choose(driver, "#file-probe", photo))


def click_and_identify(driver, css: str):
    from selenium.webdriver.common.by import By

    identify_after(driver, lambda: driver.find_element(By.CSS_SELECTOR, css).click())


def identified(driver):
    from selenium.webdriver.common.by import By

    return [li.get_attribute("data-label")
            for li in driver.find_elements(By.CSS_SELECTOR, "#faces > li")]


def name_photos(driver, chosen, name):
    """Names the unassigned faces of the photos chosen as name, in whatever
    cards they are (groups, or faces in no group): exactly those faces
    checked in each card, then its name field submitted."""
    from selenium.webdriver.common.by import By

    for where in ("#clusters", "#noise"):
        for i, g in enumerate(groups(driver, where)):
            if not set(g["photos"]) & set(chosen):
                continue
            el = driver.find_elements(By.CSS_SELECTOR, f"{where} > .group")[i]
            for tile in el.find_elements(By.CSS_SELECTOR, "li.face"):
                box = tile.find_element(By.CSS_SELECTOR, "input[type=checkbox]")
                if box.is_selected() != (tile.get_attribute("data-photo") in chosen):
                    box.click()
            name_card(driver, el, name)
            return name_photos(driver, chosen, name)  # the cards were redrawn


def open_people(srv, files):
    """A browser on the People view with files added; returns the driver."""
    from selenium.webdriver.common.by import By

    d = make_driver()
    open_page(d, srv)
    d.find_element(By.ID, "tab-people").click()
    wait(d, lambda d: idle(d) and d.execute_script(
        "return document.getElementById('panel-people').dataset.version"))
    assert d.find_element(By.ID, "people-empty").is_displayed()
    people_action(d, lambda: choose(d, "#file-people", "\n".join(map(str, files))))
    assert text_of(d, "#people-error") == ""
    assert f"{len(files)} faces added from {len(files)} photos" in text_of(d, "#people-status")
    return d


BATCH = [(p, i) for p, idx in PEOPLE.items() for i in idx]


def test_people_groups(people_demo):
    """Issue 19 part 4 on the real model and server: nine photos of three
    people are grouped into three groups of the right people, drawn from
    the photos in the page; one is named by keyboard alone with a face left
    out, which then stands apart."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    srv = people_demo
    need_routes(srv, *FACES_ROUTES, CLUSTER_ROUTE)
    r = requests.post(srv.url("/api/v1/faces/cluster"), json={"source": "unassigned"},
                      headers={"X-Demo-Token": page_token(srv)}, timeout=30)
    if r.status_code != 200:
        pytest.skip(f'needs POST /api/v1/faces/cluster {{"source": "unassigned"}}: {r.text}')
    d = open_people(srv, [lfw_photo(p, i) for p, i in BATCH])
    try:
        got = sorted(sorted(g["photos"]) for g in groups(d, "#clusters"))
        assert got == sorted(photos(p) for p in PEOPLE), got
        assert groups(d, "#noise") == []
        assert re.fullmatch(r"Grouped at a false-match rate of \de-\d \(faces at most 0\.\d{3} apart\)"
                            r", by chinese whispers\.", text_of(d, "#clusters-op"))
        # The strictness is the rate the server groups at.
        from selenium.webdriver.support.ui import Select

        strictness = Select(d.find_element(By.ID, "people-fmr"))
        people_action(d, lambda: strictness.select_by_visible_text("strict"))
        assert text_of(d, "#clusters-op").startswith("Grouped at a false-match rate of 1e-6 ")
        people_action(d, lambda: strictness.select_by_visible_text("default"))
        # Each face is drawn from its photo in the page (not a blank tile).
        assert d.execute_script("""
            const c = document.querySelector('#clusters li.face canvas');
            const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let grey = 0; for (let i = 0; i < px.length; i += 4)
              grey += px[i] === 0xd0 && px[i + 1] === 0xd5 && px[i + 2] === 0xdd;
            return grey < px.length / 8;""")
        shot(d, "people-groups")
        # Colin Powell's group named with one face left out, by keyboard.
        g = cluster_of(d, "Colin_Powell")
        left_out = g.find_elements(By.CSS_SELECTOR, "input[type=checkbox]")[0]
        left_photo = left_out.find_element(By.XPATH, "ancestor::li").get_attribute("data-photo")
        left_out.send_keys(Keys.SPACE)
        assert not left_out.is_selected()
        name_card(d, g, "Colin Powell", keyboard=True)
        assert people_of(d) == {"Colin Powell": [p for p in photos("Colin_Powell") if p != left_photo]}
        assert text_of(d, "#people-status") == "2 faces named Colin Powell."  # announced (aria-live)
        assert [x["photos"] for x in groups(d, "#noise")] == [[left_photo]]
        assert len(groups(d, "#clusters")) == 2
        severe = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
    finally:
        d.quit()


def test_people_merge_and_split(people_demo):
    """Issue 19 part 4: naming, merging and splitting people in the People
    view, each step checked against who is really in each photo.  Colin
    Powell named in two parts and merged; Jennifer Aniston's faces named
    Colin Powell by mistake and split off again (buttons, then a drag); an
    API error shown on its card.  (It names faces wherever the grouping
    put them.)"""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    srv = people_demo
    need_routes(srv, *FACES_ROUTES, CLUSTER_ROUTE)
    d = open_people(srv, [lfw_photo(p, i) for p, i in BATCH])
    try:
        powell = photos("Colin_Powell")
        name_photos(d, powell[:2], "Colin Powell")
        name_photos(d, powell[2:], "C. Powell")
        assert people_of(d) == {"Colin Powell": powell[:2], "C. Powell": powell[2:]}
        c = card(d, "#people", lambda g: g["name"] == "C. Powell")
        Select(c.find_element(By.CSS_SELECTOR, "select")).select_by_visible_text("Colin Powell")
        people_action(d, lambda: c.find_element(By.CSS_SELECTOR, "button[aria-label^='Merge']").click())
        assert people_of(d) == {"Colin Powell": powell}
        assert text_of(d, "#people-status") == "C. Powell merged into Colin Powell."

        # Serena named; Jennifer Aniston named Colin Powell by mistake (an
        # existing name: she joins him).
        name_photos(d, photos("Serena_Williams"), "Serena Williams")
        name_photos(d, photos("Jennifer_Aniston"), "Colin Powell")
        assert people_of(d) == {"Serena Williams": photos("Serena_Williams"),
                                "Colin Powell": sorted(powell + photos("Jennifer_Aniston"))}
        assert groups(d, "#clusters") == [] and groups(d, "#noise") == []
        shot(d, "people-wrong-merge")
        # Split: two of her faces selected and moved to a new person ...
        c = card(d, "#people", lambda g: g["name"] == "Colin Powell")
        tiles = [t for t in c.find_elements(By.CSS_SELECTOR, "li.face")
                 if person_of(t.get_attribute("data-photo")) == "Jennifer_Aniston"]
        moved = sorted(t.get_attribute("data-photo") for t in tiles[:2])
        for t in tiles[:2]:
            t.find_element(By.CSS_SELECTOR, "input").click()
        name_card(d, c, "Jennifer Aniston")
        got = people_of(d)
        assert got["Jennifer Aniston"] == moved, got
        assert len(got["Colin Powell"]) == 4 and set(moved).isdisjoint(got["Colin Powell"]), got
        # ... and the third dragged onto her card.
        last = next(f for f in groups(d, "#people") if f["name"] == "Colin Powell")
        fid = next(i for i, p in zip(last["faces"], last["photos"])
                   if person_of(p) == "Jennifer_Aniston")
        people_action(d, lambda: d.execute_script("""
            const tile = document.querySelector(`#people li.face[data-face-id="${arguments[0]}"]`);
            const to = document.querySelector('#people .group[data-name="Jennifer Aniston"]');
            const dt = new DataTransfer();
            tile.dispatchEvent(new DragEvent('dragstart', {dataTransfer: dt, bubbles: true}));
            to.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, bubbles: true, cancelable: true}));
            to.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
        """, fid))
        assert people_of(d) == {"Serena Williams": photos("Serena_Williams"),
                                "Colin Powell": powell,
                                "Jennifer Aniston": photos("Jennifer_Aniston")}
        shot(d, "people-named")

        # An error from the API is shown on the card: merge into someone
        # deleted meanwhile (by another client).
        gone = next(g["id"] for g in groups(d, "#people") if g["name"] == "Jennifer Aniston")
        assert requests.delete(srv.url(f"/api/v1/subjects/{gone}"), timeout=30,
                               headers={"X-Demo-Token": page_token(srv)}).status_code == 200
        c = card(d, "#people", lambda g: g["name"] == "Serena Williams")
        Select(c.find_element(By.CSS_SELECTOR, "select")).select_by_visible_text("Jennifer Aniston")
        c.find_element(By.CSS_SELECTOR, "button[aria-label^='Merge']").click()
        wait(d, lambda d: idle(d) and c.find_element(By.CSS_SELECTOR, ".error").text)
        assert str(gone) in c.find_element(By.CSS_SELECTOR, ".error").text
        assert people_of(d)["Serena Williams"] == photos("Serena_Williams")
        # Moving with nothing selected says so, without a request.
        c.find_element(By.CSS_SELECTOR, "form input[list]").send_keys("Someone")
        c.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        assert "Select at least one face" in c.find_element(By.CSS_SELECTOR, ".error").text
        # On a phone-sized screen the people cards fit the width.
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                          {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
        assert d.execute_script("return document.documentElement.scrollWidth") <= 390
        shot(d, "people-phone")
        severe = [e for e in d.get_log("browser") if e["level"] == "SEVERE"
                  and "/merge" not in e["message"]]  # the refused merge's 404
        assert not severe, severe
    finally:
        d.quit()


def test_not_this_person(people_demo, tmp_path):
    """On an identify answer, "Not Serena Williams" records the face as not
    her (POST /api/v1/subjects/{id}/not): identifying the same photo again
    no longer says Serena, while another photo of Serena still does."""
    from selenium.webdriver.common.by import By

    srv = people_demo
    need_routes(srv, NOT_ROUTE)
    tok = {"X-Demo-Token": page_token(srv)}
    # Serena enrolled with her three photos (through the plain enrol route,
    # so that this test does not depend on the People view's).
    r = requests.post(srv.url("/api/v1/subjects"), json={"name": "Serena W."}, headers=tok, timeout=30)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    for i in PEOPLE["Serena_Williams"]:
        with open(lfw_photo("Serena_Williams", i), "rb") as f:
            r = requests.post(srv.url(f"/api/v1/subjects/{sid}/faces"), files={"image": f},
                              headers=tok, timeout=120)
        assert r.status_code == 201, r.text
    d = make_driver()
    try:
        open_page(d, srv)
        d.find_element(By.ID, "tab-identify").click()
        wait(d, idle)
        identify_photo(d, lfw_photo("Venus_Williams", 17))
        assert identified(d) == ["Serena W."], "precondition: the sisters are confused"
        shot(d, "not-this-before")
        click_and_identify(d, "button[aria-label='This face is not Serena W.']")
        assert identified(d) == ["Unknown"]
        assert re.search(r"Serena W\.: distance 0\.\d+, excluded \(marked not this person\)",
                         text_of(d, "#faces")), text_of(d, "#faces")
        shot(d, "not-this-after")
        r = requests.get(srv.url(f"/api/v1/subjects/{sid}/not"), headers=tok, timeout=30)
        assert r.status_code == 200 and len(r.json()["corrections"]) == 1, r.text
        # Serena herself is still found.
        identify_photo(d, lfw_photo("Serena_Williams", 3))
        assert identified(d) == ["Serena W."]
        # Undo (on the excluded candidate) deletes the correction.
        identify_photo(d, lfw_photo("Venus_Williams", 17))
        assert identified(d) == ["Unknown"]
        click_and_identify(d, "button[aria-label='Undo \"not Serena W.\"']")
        assert identified(d) == ["Serena W."]
        r = requests.get(srv.url(f"/api/v1/subjects/{sid}/not"), headers=tok, timeout=30)
        assert r.status_code == 200 and r.json()["corrections"] == [], r.text

        # In a photo of two, the page sends a cut around the face concerned
        # (the server takes a photo's largest face).  Colin Powell's face is
        # the smaller one here: marking it excludes him, which it would not
        # if the whole photo (Jennifer Aniston's larger face) were sent.
        from PIL import Image

        enroll(d, "Colin Powell", lfw_photo("Colin_Powell", 1))
        two = Image.new("RGB", (250 + 400, 400), (60, 60, 60))
        two.paste(Image.open(lfw_photo("Colin_Powell", 5)), (0, 75))
        two.paste(Image.open(lfw_photo("Jennifer_Aniston", 2)).resize((400, 400)), (250, 0))
        two.save(tmp_path / "two.jpg", quality=92)
        identify_photo(d, tmp_path / "two.jpg")
        assert sorted(identified(d)) == ["Colin Powell", "Unknown"]
        click_and_identify(d, "button[aria-label='This face is not Colin Powell']")
        assert identified(d) == ["Unknown", "Unknown"]
        assert re.search(r"Colin Powell: distance 0\.\d+, excluded", text_of(d, "#faces"))
        severe = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
    finally:
        d.quit()
