"""The browser files: where they are, and the routes that serve them.

The dashboard and the wallboard are the repository's top-level `web/` folder: plain ES modules and
style sheets, with the browser libraries they import vendored in `web/vendor/` (so serving them
needs neither Node.js nor npm; `web/vendor/update.sh` updates them from npm). Where that folder is:

- in an installed wheel, package data of `server`, at `server/_web/` (setup.py maps `web/` there),
  read through `importlib.resources`;
- in a checkout (run in place, or installed with `pip install -e .`), the `web/` folder next to
  the `server/` package, as it is.

Routes: `/` (the dashboard), `/wallboard`, `/docs` (the API docs: Swagger UI reading /openapi.json),
and `/web/...` (the files themselves).
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from server.api.common import OrjsonResponse

logger = logging.getLogger(__name__)

PACKAGE_DATA = "_web"  # the folder's name inside the installed `server` package
PAGES = {"/": "index.html", "/wallboard": "wallboard.html", "/docs": "docs.html"}


def web_dir() -> Path:
    """The folder of the browser files: the installed package data, else the checkout's `web/`."""
    # pip installs packages as plain files, so files() is a real directory (not a zip member)
    package = Path(resources.files("server"))
    installed = package / PACKAGE_DATA
    return installed if installed.is_dir() else package.parent / "web"


def _page(directory: Path, name: str):
    path = directory / name

    async def page(request: Request) -> Response:
        if not path.is_file():  # a broken install: say what is missing rather than a bare 404
            return OrjsonResponse({"error": {"code": "not_found", "message": f"{name} is not installed",
                                             "details": None}}, status_code=404)
        # the pages are small and name the scripts: always revalidated, so an upgrade shows at once
        return FileResponse(path, headers={"Cache-Control": "no-cache"})

    page.__doc__ = f"The browser page {name}."
    return page


def routes(directory: Path | None = None) -> list:
    """The pages and the `/web/...` files of `directory` (default: `web_dir()`)."""
    directory = directory or web_dir()
    # pages, not API routes: left out of /openapi.json
    found = [Route(path, _page(directory, name), include_in_schema=False) for path, name in PAGES.items()]
    if directory.is_dir():
        found.append(Mount("/web", app=StaticFiles(directory=directory), name="web"))
    else:
        logger.warning("the browser files are missing (no folder %s): the dashboard will answer 404", directory)
    return found
