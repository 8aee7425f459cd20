"""Run the OpenAI-compatible test server (tests/servers) in its own process.

    python benchmarks/_server.py [--port 0] [--reply-words 50]

Prints the client base URL (``http://127.0.0.1:<port>/v1``) on the first line of stdout,
then serves until stdin is closed or the process is terminated. Every chat reply is
``--reply-words`` words long (streamed as one SSE chunk per word); requests are not
recorded, so memory stays flat however long it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


async def serve(port: int, reply_words: int) -> None:
    from aiohttp import web

    from tests.servers import ServerState, make_openai_app

    state = ServerState(record_requests=False, validate_spec=False)  # timing, not conformance
    state.reply = " ".join(f"w{i % 1000}" for i in range(reply_words))
    runner = web.AppRunner(
        make_openai_app(state), handle_signals=False, access_log=None, shutdown_timeout=0.5
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"http://127.0.0.1:{bound}/v1", flush=True)
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, sys.stdin.read)  # EOF: the parent went away
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reply-words", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.reply_words))


if __name__ == "__main__":
    main()
