"""Command line: `python -m server [serve|create-user|create-token|listen|simulator]`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import logging
import sys

from server.config import ConfigError, load_settings

GC_YOUNG_THRESHOLD = 20_000  # allocations between two young collections (CPython's default: 700)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from server.app import DEMO_USERS, UVICORN_OPTIONS, create_app

    settings = load_settings()
    # the application's own loggers follow JOBMON_LOG_LEVEL too, not only uvicorn's
    logging.getLogger("server").setLevel(settings.log_level)
    # a clear message (not a traceback from inside uvicorn) when the database cannot be opened
    asyncio.run(_check_database(settings.database_url))
    display_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    url = f"http://{display_host}:{args.port}"
    app = create_app(settings, self_url=f"http://127.0.0.1:{args.port}")
    print(f"Job Monitor: dashboard at {url}/  (wallboard at {url}/wallboard)", flush=True)
    print(f"  database: {settings.database_url.split('@')[-1]}", flush=True)
    if settings.demo:
        logins = ", ".join(f"{u} / {p}" for u, p, _ in DEMO_USERS)
        print(f"  demo mode: log in as {logins}", flush=True)
    else:
        print("  log in with a user made by: python -m server create-user NAME [--admin]", flush=True)
    if settings.embedded_simulator:
        print(f"  simulated cluster 'sim' at {url}/sim", flush=True)
    # uvicorn formats an access-log record per request (client address, quoted path) before the
    # logger drops it: above INFO there is no access log to write, so it is off altogether
    access_log = settings.log_level in ("DEBUG", "INFO")
    _tune_gc()
    uvicorn.run(app, host=args.host, port=args.port, log_level=settings.log_level.lower(),
                proxy_headers=args.proxy_headers, access_log=access_log, **UVICORN_OPTIONS)
    return 0


def _tune_gc() -> None:
    """Fewer garbage collections while serving.

    Each request allocates hundreds of objects, so CPython's default threshold (700) ran a young
    collection every few requests, and every few hundred of those a full one over all the
    objects the imports made (SQLAlchemy, pydantic, Starlette): measured, about 15% of the
    server's CPU under agent reports. What start-up made lives as long as the process: frozen, no
    collection looks at it again; young objects are collected every GC_YOUNG_THRESHOLD allocations.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


async def _check_database(url: str) -> None:
    from server.db import Db

    db = Db(url)
    await db.connect()
    await db.disconnect()


async def _with_accounts(action):
    from server.accounts.store import Accounts
    from server.db import Db, migrate

    settings = load_settings()
    db = Db(settings.database_url)
    await db.connect()
    try:
        await migrate(db)
        return await action(Accounts(db))
    finally:
        await db.disconnect()


def _create_user(args: argparse.Namespace) -> int:
    from server.errors import AppError

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"Password for {args.name}: ")
        if password != getpass.getpass("Again: "):
            print("The passwords differ.", file=sys.stderr)
            return 1
    try:
        user = asyncio.run(_with_accounts(
            lambda accounts: accounts.create_user(args.name, password, "admin" if args.admin else "user")))
    except AppError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(f"created {user['role']} {user['username']} (id {user['id']})")
    return 0


def _create_token(args: argparse.Namespace) -> int:
    from server.accounts.store import Scope
    from server.errors import AppError

    async def action(accounts):
        user = await accounts.user_by_name(args.user)
        if user is None:
            raise AppError(f"no user {args.user!r}")
        return await accounts.create_token(user["id"], user["role"], Scope.parse(args.scope), args.name)

    try:
        token = asyncio.run(_with_accounts(action))
    except AppError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(token["token"])
    print(f"(token {token['id']} '{token['name']}', scope {token['scope']}: shown once, store it now)",
          file=sys.stderr)
    return 0


def _listen(args: argparse.Namespace) -> int:
    from server.cli.listener import run_listener

    return asyncio.run(run_listener(args.url, args.token, all_events=args.all, state_file=args.state_file))


def _simulator(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from server.sim.cluster import create_simulator_app, knobs_from_env

    try:
        knobs = knobs_from_env(os.environ)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Simulated TMS cluster at http://{args.host}:{args.port}/tms/v1/ (knobs at /_sim/knobs)", flush=True)
    uvicorn.run(create_simulator_app(knobs), host=args.host, port=args.port, log_level="warning")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobmon", description="Job Monitor (also `python -m server`)")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run the server (the default)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--proxy-headers", action="store_true", help="trust X-Forwarded-* from a proxy")
    user = commands.add_parser("create-user", help="create a user")
    user.add_argument("name")
    user.add_argument("--admin", action="store_true")
    user.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    token = commands.add_parser("create-token", help="create an API token and print it once")
    token.add_argument("user")
    token.add_argument("--scope", choices=["read", "agent", "write", "admin"], required=True)
    token.add_argument("--name", default="cli")
    listen = commands.add_parser("listen", help="print job alerts (and events) as JSON lines")
    listen.add_argument("--url", required=True)
    listen.add_argument("--token", required=True)
    listen.add_argument("--all", action="store_true", help="also print every job-update and job-stats")
    listen.add_argument("--state-file", help="remember the last event id here across restarts")
    sim = commands.add_parser("simulator", help="run the simulated cluster on its own port")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8100)

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in commands.choices and argv[0] not in ("-h", "--help"):
        argv = ["serve", *argv]  # `serve` is the default command
    args = parser.parse_args(argv)
    # one-shot commands print their result only; long-running ones log what they do
    quiet = args.command in ("create-user", "create-token")
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers = {"serve": _serve, "create-user": _create_user, "create-token": _create_token,
                "listen": _listen, "simulator": _simulator}
    from server.db import DatabaseUnavailable

    try:
        return handlers[args.command](args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except DatabaseUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
