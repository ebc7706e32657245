"""``llmgate serve | models | chat | hash-key`` (also ``python -m gateway ...``).

Exit codes: 0 ok, 1 runtime failure (server could not reach ready, chat server unreachable),
2 usage or configuration error (one line on stderr naming the key).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import math
import socket
import sys
from collections.abc import Sequence

from gateway.config import LOG_LEVELS, ConfigError, GatewayConfig, load_config

DEFAULT_CONFIG = "config.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handler = {"serve": _serve, "models": _models, "chat": _chat, "hash-key": _hash_key}[
        args.command
    ]
    return int(handler(args))


def _version() -> str:
    try:
        return importlib.metadata.version("llmgate")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "(not installed)"


def _port(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number, 0-65535 (got {text!r})")
    return value


def _at_least_zero(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number, 0 or more (got {text!r})")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmgate", description="Self-hosted LLM gateway")
    parser.add_argument("--version", action="version", version=f"llmgate {_version()}")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the OpenAI-compatible server")
    serve.add_argument("--config", default=DEFAULT_CONFIG, help="path to config.yaml")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=_port, help="override server.port (0-65535)")
    serve.add_argument(
        "--log-level",
        type=str.lower,
        choices=LOG_LEVELS,
        help="override server.log_level",
    )
    models = sub.add_parser("models", help="list configured models (and, with --url, loaded)")
    models.add_argument("--config", default=DEFAULT_CONFIG)
    models.add_argument(
        "--url", help="ask a running server instead, e.g. http://127.0.0.1:8000 (/v1 implied)"
    )
    models.add_argument("--api-key", default=None)
    chat = sub.add_parser(
        "chat", help="multi-turn chat in the terminal against a server (/help inside)"
    )
    chat.add_argument(
        "--url", default="http://127.0.0.1:8000/v1", help="the server (/v1 implied when no path)"
    )
    chat.add_argument("--model", default="default")
    chat.add_argument("--api-key", default=None)
    chat.add_argument("--system", default=None, help="system prompt")
    chat.add_argument(
        "--max-tokens", type=_at_least_zero, default=512, help="per answer (0: no limit)"
    )
    hash_key = sub.add_parser(
        "hash-key", help="print an API key as 'sha256:<hex>' for server.api_keys (key on stdin)"
    )
    hash_key.add_argument("key", nargs="?", help="the key (default: read one line from stdin)")
    return parser


def _load(path: str) -> GatewayConfig | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"llmgate: config error: {exc}", file=sys.stderr)
        return None


def _native_engines_first(config: GatewayConfig) -> None:
    """Load llama-cpp-python's libraries before anything imports numpy or aiohttp: with a CUDA
    build, the other order crashed the first model load (a segfault in
    ``llama_model_load_from_file``; llama-cpp-python 0.3.36, CUDA 13, an H200:
    docs/benchmarks.md, "GPU"). ``import llama_cpp`` loads them, then imports numpy itself."""
    if any(model.backend == "llama_cpp" for model in config.models):
        with contextlib.suppress(ImportError):  # the model's load says how to install it
            import llama_cpp  # noqa: F401


def _cannot_listen(host: str, port: int) -> str | None:
    """Why the server could not listen on ``host:port``, found before any model loads (the
    server binds only after its models have loaded). Binds every address the name resolves
    to, with the options asyncio's server uses, then lets go."""
    if port == 0:
        return None
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        return str(exc)
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                return exc.strerror or str(exc)
    return None


def _serve(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    refused = _cannot_listen(host, port)
    if refused is not None:
        print(f"llmgate: cannot listen on {host}:{port}: {refused}", file=sys.stderr)
        return 1
    _native_engines_first(config)
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from gateway.app import create_app
    from gateway.request_log import configure_logging
    from gateway.shutdown import GRACE_SECONDS, draining_server, run_server

    level = (args.log_level or config.server.log_level).lower()
    json_logs = config.server.log_format == "json"
    configure_logging(level, config.server.log_format)
    drain = config.server.drain_seconds
    # SIGTERM / Ctrl-C: requests in flight get drain_seconds, then streams are ended
    # (gateway/shutdown.py); uvicorn's own limit is a backstop past that
    server = draining_server(
        uvicorn.Config(
            create_app(config),
            host=host,
            port=port,
            log_level=level,
            # JSON: uvicorn's own lines go through the root handler too
            log_config=None if json_logs else LOGGING_CONFIG,
            # one line per request comes from llmgate.requests (gateway/request_log.py)
            access_log=False,
            timeout_graceful_shutdown=math.ceil(drain + GRACE_SECONDS),
        ),
        drain,
    )
    # What is imported and built so far lives as long as the process: out of the cyclic GC's
    # way, full collections need not traverse it again and again (at 32 concurrent relayed
    # requests they cost ~15% of the CPU: docs/benchmarks.md). Models load after this, in the
    # lifespan, so an unloaded model is still collected.
    gc.collect()
    gc.freeze()
    run_server(server)  # returns after SIGTERM or Ctrl-C too
    return 0 if server.started else 1


def _models(args: argparse.Namespace) -> int:
    if args.url:
        from gateway.chat_client import ChatClient, ChatError

        try:
            client = ChatClient(args.url, args.api_key)
        except ChatError as exc:
            print(f"llmgate: {exc}", file=sys.stderr)
            return 2
        try:
            cards = client.model_cards()
        except ChatError as exc:
            print(f"llmgate: {exc}", file=sys.stderr)
            return 1
        finally:
            client.close()
        for card in cards:
            aliases = ",".join(card.get("aliases", [])) or "-"
            loaded = "loaded" if card.get("loaded") else "not loaded"
            task = card.get("task", "generate")
            print(
                f"{card['id']:<24} {card.get('backend', '?'):<12} {task:<9} {aliases:<16} {loaded}"
            )
        return 0
    config = _load(args.config)
    if config is None:
        return 2
    for model in config.models:
        aliases = ",".join(model.aliases) or "-"
        where = getattr(model, "source", None) or getattr(model, "base_url", "")
        print(f"{model.name:<24} {model.backend:<12} {model.task:<9} {aliases:<16} {where}")
    return 0


def _chat(args: argparse.Namespace) -> int:
    from gateway.terminal_chat import run_chat

    return run_chat(args.url, args.model, args.api_key, args.system, args.max_tokens)


def _hash_key(args: argparse.Namespace) -> int:
    from gateway.api_keys import hash_key

    key = args.key if args.key is not None else sys.stdin.readline().strip()
    if not key:
        print("llmgate: hash-key: no key given (pass it or send it on stdin)", file=sys.stderr)
        return 2
    print(hash_key(key))
    return 0
