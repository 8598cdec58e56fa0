"""The HTML leaderboard page is self-contained: checked in its text, then in a real headless browser where one is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from leaderboard_runs import RunList, leaderboard_runs

from cdkd_bench.leaderboard import write_leaderboard_files

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text of <style> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory, host) -> Path:
    # The first checkpoint of every run scores above its last, so the oracle plot has something to show.
    runs = leaderboard_runs(oracle_gain=2.5)
    [path], _ = write_leaderboard_files(RunList(runs), "embedded", tmp_path_factory.mktemp("page"), host, None, ("html",))
    return path


def test_the_page_names_nothing_to_fetch(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    parser = Tags()
    parser.feed(text)
    names = [tag for tag, _ in parser.tags]
    assert not {"script", "link", "img", "iframe", "object", "embed", "image", "audio", "video", "source"} & set(names)
    for tag, attrs in parser.tags:
        for name in ("src", "href", "xlink:href", "action", "srcset", "poster", "data"):
            value = attrs.get(name)
            assert value is None or value.startswith("#"), f"<{tag} {name}={value!r}> points outside the page"
    css = " ".join(parser.styles) + " ".join(attrs.get("style") or "" for _, attrs in parser.tags)
    assert "@import" not in css and "@font-face" not in css
    assert all(target.startswith("#") for target in re.findall(r"url\(\s*['\"]?([^)'\"]*)", css))
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE)  # no address at all, not even a namespace
    policy = next(attrs["content"] for tag, attrs in parser.tags if tag == "meta" and attrs.get("http-equiv") == "Content-Security-Policy")
    assert policy is not None and "default-src 'none'" in policy
    ids = [attrs["id"] for _, attrs in parser.tags if attrs.get("id")]
    assert len(ids) == len(set(ids)), "several inline SVGs share ids"
    assert names.count("svg") == 3 and names.count("table") == 2  # the plots; the leaderboard and the teachers' source accuracy


def _browser() -> str:
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found is None:
        pytest.skip(f"no headless browser on this machine (looked for {', '.join(BROWSERS)}); e.g. apt-get install chromium")
    return found


def _visit(browser: str, page: Path, folder: Path) -> tuple[str, bytes, list[str]]:
    """Load ``page`` headless: its DOM after rendering, a screenshot, and the http(s) URLs the page itself requested."""
    screenshot, net_log = folder / "page.png", folder / "net-log.json"
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        f"--user-data-dir={folder / 'profile'}", "--window-size=1280,2400",
        # A dead proxy: whatever is requested never leaves the machine; the net log still records the request.
        "--proxy-server=127.0.0.1:9", f"--log-net-log={net_log}", f"--screenshot={screenshot}", "--dump-dom", page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    log, _ = json.JSONDecoder().raw_decode(net_log.read_text(encoding="utf-8"))
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    # The browser's own housekeeping (update and clock checks) has no origin; anything the page loads has one (file://).
    requested = [event["params"]["url"] for event in log["events"]
                 if event["type"] == start_job and event["params"].get("initiator") != "not an origin"
                 and re.match(r"https?://", event["params"].get("url", ""))]
    return done.stdout.decode("utf-8"), screenshot.read_bytes(), requested


def test_a_headless_browser_renders_the_table_and_plots_without_the_network(page: Path, tmp_path: Path) -> None:
    browser = _browser()
    dom, png, requested = _visit(browser, page, tmp_path / "page")
    assert "<table>" in dom and "nkd †‡" in dom and "printed→handwritten" in dom
    assert dom.count("<svg") == 3 and dom.count("<path") > 100  # the three plots, drawn (glyphs and marks are paths)
    assert "What oracle selection adds over" in dom
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000
    assert requested == []
    # The same check catches a page that does fetch something: it is not vacuous.
    control = tmp_path / "control.html"
    control.write_text('<!DOCTYPE html><html><body><img src="http://192.0.2.1/pixel.png" alt=""></body></html>', encoding="utf-8")
    assert set(_visit(browser, control, tmp_path / "control")[2]) == {"http://192.0.2.1/pixel.png"}
