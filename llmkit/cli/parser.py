"""The command line's arguments."""

from __future__ import annotations

import argparse
from typing import Any

from llmkit.cli._common import Parser


def _add_global_flags(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # On subcommands the defaults are suppressed, so a flag given before the subcommand
    # is not overwritten by the subcommand's default.
    default: Any = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("provider options")
    group.add_argument(
        "--provider",
        default=default,
        help="provider name (default: $LLMKIT_PROVIDER; with neither nor --config, the "
        "built-in 'mock' provider, announced on stderr)",
    )
    group.add_argument("--model", default=default, help="model name")
    group.add_argument("--base-url", default=default, help="server base URL")
    group.add_argument(
        "--config", default=default, metavar="FILE", help="YAML or JSON config file (llmkit.load_config)"
    )
    group.add_argument("--max-tokens", type=int, default=default, help="maximum reply tokens")
    group.add_argument("--temperature", type=float, default=default, help="sampling temperature")
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS if suppress else 0,
        help="show retries and other client events on stderr",
    )


def _add_batch(sub: Any, command: Any) -> None:
    p = command("batch", "generate replies for a prompts file (JSONL out, resumable)")
    p.add_argument(
        "input",
        help="prompts file ('-' for stdin): one prompt per line; or JSONL throughout, rows "
        '{"prompt": ...} or {"messages": [...]} with optional "options" and "id"; or '
        "OpenAI's batch input format (custom_id, method, url, body). Blank lines are "
        "skipped; a malformed line is an error naming it",
    )
    p.add_argument(
        "-o",
        "--output",
        default="-",
        help="JSONL output file (default stdout). Each row records provider, model, mode "
        "and a hash of the prompt. Answers are journaled as they arrive (OUT.journal) and "
        "OUT is replaced whole at the end; rerunning with the same file skips the prompts "
        "already answered and retries the failed ones",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="use an output file that holds answers of another provider, model or prompts "
        "file: other prompts are answered again, other providers' answers are kept",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="requests in flight at most (with --ray: per actor)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument(
        "--mode",
        choices=("live", "provider"),
        default="live",
        help="live: send the requests now, through the client's limits (default); provider: "
        "the provider's Batch API (OpenAI and compatible servers with /files and /batches: "
        "half the price, answers within 24 hours; OUT.state.json lets a rerun re-attach)",
    )
    p.add_argument(
        "--poll-interval",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="with --mode provider: seconds between polls of the batches (default 15)",
    )
    p.add_argument(
        "--max-batch-requests",
        type=int,
        default=None,
        metavar="N",
        help="with --mode provider: at most N requests per batch (default 50000, the provider's limit)",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run on a Ray cluster (needs llmkit[ray]): a local one, or the cluster at "
        "ADDRESS ('auto' for the one 'ray start' runs here, or ray://HOST:10001); one "
        "rate limit for all actors",
    )
    p.add_argument("--actors", type=int, default=2, help="with --ray: actors, each with one client")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="llmkit",
        description="One command line over OpenAI(-compatible), Ollama, Hugging Face and mock providers.",
        epilog=(
            "API keys come from the environment only (OPENAI_API_KEY, HUGGINGFACE_API_TOKEN/HF_TOKEN); "
            "base URLs also from OPENAI_BASE_URL and OLLAMA_HOST. The provider is --provider, "
            "the config file's, or $LLMKIT_PROVIDER; with none of them the built-in 'mock' "
            "provider answers (and says so on stderr). Progress bars are drawn only on a terminal."
        ),
    )
    from llmkit.core.version import __version__

    parser.add_argument("--version", action="version", version=f"llmkit {__version__}")
    _add_global_flags(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(
            name, help=help, description=help, allow_abbrev=False
        )
        _add_global_flags(p, suppress=True)
        return p

    command("providers", "list the registered providers")
    command("health", "check that the provider is reachable and usable")

    p = command("models", "list the provider's models")
    p.add_argument("query", nargs="?", default=None, help="search text (Hugging Face Hub)")
    p.add_argument("--limit", type=int, default=20, help="at most this many (Hugging Face Hub)")
    p.add_argument("--json", action="store_true", help="print the raw model objects as JSON lines")

    for name, help in (
        ("generate", "generate a reply to a prompt"),
        ("stream", "stream a reply to a prompt, printing text as it arrives"),
    ):
        p = command(name, help)
        p.add_argument("prompt", nargs="?", default=None, help="the prompt ('-' or none: stdin)")
        p.add_argument("--system", default=None, help="a system message")

    p = command("embed", "print the embedding vector(s) of text(s) as JSON")
    p.add_argument("texts", nargs="*", help="texts (none: one text from stdin)")

    _add_batch(sub, command)

    p = command("pull", "download a model (Ollama) with a progress bar")
    p.add_argument("name", help="model name, e.g. llama3.2")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser
