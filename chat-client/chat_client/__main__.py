"""`python -m chat_client [serve|migrate|genkey]`.

serve    (the default) apply migrations, then serve on CHAT_HOST:CHAT_PORT (127.0.0.1:8000)
migrate  apply migrations and exit (`--revision base` removes the schema)
genkey   print a new CHAT_SESSION_KEY
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import warnings

from aiohttp.web_exceptions import NotAppKeyWarning
from cryptography.fernet import Fernet

from chat_client.settings import ChatSettings, ConfigError, load_settings

log = logging.getLogger("chat_client")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chat_client", description="The chat app.")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="apply migrations and serve (default)")
    migrate_parser = commands.add_parser("migrate", help="apply database migrations and exit")
    migrate_parser.add_argument(
        "--revision", default="head", help='target revision (default "head"; "base" drops)'
    )
    commands.add_parser("genkey", help="print a new CHAT_SESSION_KEY")
    args = parser.parse_args(argv)

    if args.command == "genkey":
        print(Fernet.generate_key().decode())
        return 0

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # chat_client.database logs the outcome
    # aiohttp-session (latest release 2.12.1) keeps its state under string request keys, which aiohttp
    # >= 3.12 warns about; nothing for the person running the app to act on.
    warnings.filterwarnings("ignore", category=NotAppKeyWarning, module="aiohttp_session")
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"chat-client: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "migrate":
            asyncio.run(_migrate(settings, args.revision))
        else:
            _serve(settings)
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # start-up failures (database unreachable, port taken): one line, no traceback
        log.debug("start-up failure", exc_info=True)
        print(f"chat-client: could not start: {_explain(exc)}", file=sys.stderr)
        return 1
    return 0


def _serve(settings: ChatSettings) -> None:
    from aiohttp import web

    from chat_client.app import create_app
    from chat_client.telemetry import setup_telemetry

    if setup_telemetry():
        log.info("telemetry: exporting to Application Insights")

    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        print=lambda text: log.info(" ".join(text.split())),
    )


async def _migrate(settings: ChatSettings, revision: str) -> None:
    from chat_client.database import migrate
    from chat_client.entra_password import open_engine

    async with open_engine(settings) as engine:
        await migrate(engine, revision)


def _explain(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    module = type(exc).__module__
    if module.startswith(("sqlalchemy", "asyncpg", "sqlite3", "aiosqlite")) or isinstance(
        exc, ConnectionError
    ):
        text += " (check DATABASE_URL and that the database server is reachable)"
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
