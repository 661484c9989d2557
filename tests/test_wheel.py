"""It installs and runs like a Python service: the wheel, in a clean virtual environment, outside the checkout.

The wheel is built from a copy of the working tree (so the checkout gets no build/ folder), installed
with its dependencies into a new virtual environment in a temporary folder, and `jobmon serve` runs
from an empty folder: whatever it serves comes from the installed package, not from the checkout.
Dependencies come from the package index (pip's cache makes later runs quicker).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from support import ROOT, free_port, require_chromium

pytestmark = pytest.mark.slow

# left out of the copy the wheel is built from (at the top level / anywhere); web/node_modules stays
# in when it is there, to check that the wheel leaves it out
NOT_COPIED_TOP = {".git", ".venv", "tests", "docs", "data", "build", "dist"}
NOT_COPIED = ["__pycache__", "*.egg-info", ".pytest_cache"]
CONTENT_TYPES = {".html": ("text/html",), ".js": ("text/javascript", "application/javascript"),
                 ".css": ("text/css",), ".svg": ("image/svg+xml",)}
# what a page loads (<script src>, <link href>) and what a module imports (static, bare, dynamic)
PAGE_REFERENCE = re.compile(r'(?:src|href)="([^"#]+)"')
MODULE_REFERENCE = re.compile(r"""^\s*(?:import|export)\s[^;'"]*?\bfrom\s*['"]([^'"]+)['"]"""
                              r"""|^\s*import\s*['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)""", re.M)
VENDORED = ["/web/vendor/socket.io-client/socket.io.esm.min.js", "/web/vendor/uplot/uPlot.esm.js",
            "/web/vendor/uplot/uPlot.min.css", "/web/vendor/swagger-ui-dist/swagger-ui-bundle.js",
            "/web/vendor/swagger-ui-dist/swagger-ui.css"]


def _run(command: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def _ignore(directory: str, names: list[str]) -> set[str]:
    ignored = {name for name in names if any(fnmatch.fnmatch(name, pattern) for pattern in NOT_COPIED)}
    if Path(directory) == ROOT:
        ignored |= NOT_COPIED_TOP & set(names)
    return ignored


class Installed:
    """The built wheel and the clean virtual environment it is installed in."""

    def __init__(self, base: Path):
        self.base = base
        source, dist, self.venv = base / "source", base / "dist", base / "venv"
        shutil.copytree(ROOT, source, ignore=_ignore)
        _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", dist, source], timeout=600)
        (self.wheel,) = dist.glob("jobmon-*.whl")
        _run([sys.executable, "-m", "venv", self.venv], timeout=120)
        _run([self.bin("python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", self.wheel],
             timeout=900)
        # an empty folder to run in, and an environment that points nowhere near the checkout
        self.workdir = base / "run"
        self.workdir.mkdir()
        self.env = {key: value for key, value in os.environ.items()
                    if not key.startswith("JOBMON_") and key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        self.env.update(JOBMON_DATA_DIR=str(self.workdir / "data"), JOBMON_DEMO="true")

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name

    def jobmon(self, *args: str) -> subprocess.CompletedProcess:
        return _run([self.bin("jobmon"), *args], cwd=self.workdir, env=self.env, timeout=60)


class Served:
    """`jobmon serve` of the installed package, from the empty folder."""

    def __init__(self, installed: Installed):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = installed.base / f"serve-{self.port}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([installed.bin("jobmon"), "serve", "--port", str(self.port)],
                                            cwd=installed.workdir, env=installed.env, stdout=log,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"jobmon serve exited {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"jobmon serve did not become ready within 60 s:\n{self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    return Installed(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def served(installed):
    server = Served(installed)
    yield server
    server.stop()


def _assert_content_type(response: httpx.Response, path: str) -> None:
    content_type = response.headers.get("content-type", "").split(";")[0]
    assert content_type in CONTENT_TYPES[Path(path).suffix or ".html"], f"{path}: {content_type}"


def _references(path: str, text: str) -> list[str]:
    if path.endswith(".js"):
        return [next(filter(None, groups)) for groups in MODULE_REFERENCE.findall(text)]
    return PAGE_REFERENCE.findall(text)


def test_the_wheel_holds_every_package_and_the_web_folder_without_node_modules(installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    packages = sorted(path.parent.relative_to(ROOT).as_posix()
                      for path in (ROOT / "server").rglob("__init__.py") if "__pycache__" not in path.parts)
    assert len(packages) > 2
    for package in packages:
        assert f"{package}/__init__.py" in names, f"the wheel leaves out the package {package}"
    web_files = sorted(path.relative_to(ROOT / "web").as_posix() for path in (ROOT / "web").rglob("*")
                       if path.is_file() and "node_modules" not in path.parts)
    left_out = {"package.json", "package-lock.json", "vendor/update.sh"}
    for name in web_files:
        if name not in left_out:
            assert f"server/_web/{name}" in names, f"the wheel leaves out web/{name}"
    assert not [name for name in names if "node_modules" in name or name.endswith("update.sh")]
    entry_points = zipfile.ZipFile(installed.wheel).read(
        next(name for name in names if name.endswith(".dist-info/entry_points.txt"))).decode()
    assert "jobmon = server.cli:main" in entry_points


def test_the_jobmon_command_is_the_installed_package(installed):
    help_text = installed.jobmon("--help").stdout
    assert help_text.startswith("usage: jobmon") and "create-user" in help_text
    where = _run([installed.bin("python"), "-c", "import server; print(server.__file__)"],
                 cwd=installed.workdir, env=installed.env).stdout.strip()
    assert Path(where).is_relative_to(installed.venv), where


def test_the_installed_server_serves_the_pages_scripts_and_vendored_libraries(served):
    """Every file the pages load, followed through the modules' imports, is served with its type."""
    with httpx.Client(base_url=served.url, timeout=10) as http:
        for page in ("/", "/wallboard", "/docs"):
            response = http.get(page)
            assert response.status_code == 200, (page, response.text)
            _assert_content_type(response, page)
            assert response.headers["cache-control"] == "no-cache"
        pending = ["/", "/wallboard", "/docs"]
        seen: set[str] = set()
        while pending:
            path = pending.pop()
            if path in seen:
                continue
            seen.add(path)
            response = http.get(path)
            assert response.status_code == 200, f"{path}: {response.status_code}"
            _assert_content_type(response, path)
            if path.startswith("/web/vendor/") or path.endswith(".css"):
                continue
            for reference in _references(path, response.text):
                target = urlsplit(urljoin(served.url + path, reference))
                if f"{target.scheme}://{target.netloc}" == served.url and target.path.startswith("/web/"):
                    pending.append(target.path)
    assert set(VENDORED) <= seen, sorted(seen)
    assert {"/web/js/app.js", "/web/js/wallboard.js", "/web/js/socket.js", "/web/css/app.css"} <= seen
    assert not [path for path in seen if "node_modules" in path]


@pytest.mark.browser
def test_the_installed_dashboard_and_wallboard_run_in_chromium(installed, served):
    """Logged in as the demo user, the dashboard goes live and draws its chart; the wallboard goes live."""
    chromium = require_chromium()
    from playwright.sync_api import expect, sync_playwright

    token = installed.jobmon("create-token", "demo", "--scope", "read", "--name", "wheel test").stdout.strip()
    problems: list[str] = []

    def browser_file(url: str) -> bool:  # the pages and /web/... (the API may answer 401 before the login)
        path = urlsplit(url).path
        return path in ("/", "/wallboard") or path.startswith("/web/")

    def watch(page):
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("console", lambda message: problems.append(f"console: {message.text}")
                if message.type == "error" and ("Refused" in message.text or "Security Policy" in message.text)
                else None)
        page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}")
                if browser_file(request.url) else None)
        page.on("response", lambda response: problems.append(f"{response.status}: {response.url}")
                if response.status >= 400 and browser_file(response.url) else None)
        return page

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"])
        try:
            dashboard = watch(browser.new_context().new_page())
            dashboard.goto(served.url + "/")
            dashboard.fill("#login-username", "demo", timeout=15_000)
            dashboard.fill("#login-password", "demo-password")
            dashboard.click(".login-form button[type=submit]")
            expect(dashboard.locator("#who")).to_contain_text("demo", timeout=15_000)
            expect(dashboard.locator("#conn")).to_have_attribute("data-state", "live", timeout=15_000)
            expect(dashboard.locator("#jobs-table")).to_be_visible(timeout=15_000)
            expect(dashboard.locator("main .loading")).to_have_count(0)
            dashboard.goto(served.url + "/#/stats")  # the chart is uPlot's, vendored
            expect(dashboard.locator("#daily-chart .uplot")).to_be_visible(timeout=15_000)

            wallboard = watch(browser.new_context().new_page())  # no cookie: the token only
            wallboard.goto(f"{served.url}/wallboard#token={token}")
            expect(wallboard.locator("#conn")).to_have_attribute("data-state", "live", timeout=15_000)
            expect(wallboard.locator("#wb-owner")).to_have_text("demo's jobs", timeout=15_000)
            expect(wallboard.locator("#wb-banner")).to_be_hidden()
        finally:
            browser.close()
    assert not problems, problems
