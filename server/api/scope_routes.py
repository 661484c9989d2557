"""Routes of this area (filled in by its issue)."""

from starlette.routing import Route


def routes() -> list[Route]:
    return []
