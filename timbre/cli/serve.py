"""``timbre serve``: the browser instrument (an NSynth Super style pad, keyboard and Web MIDI)."""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys

from timbre.cli.common import add_model_argument, positive_int

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="play the model live in a browser: pad, keyboard, Web MIDI", description=run_serve.__doc__
    )
    parser.add_argument(
        "--port", type=port_number, default=8000, help="TCP port; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; other machines can connect only if it is not loopback (default: %(default)s)",
    )
    parser.add_argument(
        "--corners",
        nargs=4,
        metavar=("TOP_LEFT", "TOP_RIGHT", "BOTTOM_LEFT", "BOTTOM_RIGHT"),
        help="corner timbres: bundled names (see /api/v1/timbres), gm:PROGRAM, audio files or .npy embeddings "
        "(default: four contrasting bundled timbres)",
    )
    parser.add_argument(
        "--cache-mb", type=positive_int, default=32, help="memory for cached notes, MB (default: %(default)s)"
    )
    parser.add_argument(
        "--max-batch",
        type=positive_int,
        default=8,
        help="most concurrent notes per decoder pass (default: %(default)s)",
    )
    add_model_argument(parser)
    parser.set_defaults(handler=run_serve)


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port {text!r} is not an integer") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is outside 0-65535")
    return value


def run_serve(args: argparse.Namespace) -> int:
    """Serve the instrument page and its HTTP API (under /api/v1) until interrupted.

    Every note is synthesized when it is asked for, at any point of the pad, by the parallel decoder;
    identical requests come from an in-memory cache. Nothing is written to disk.
    """
    # Imported here so that `timbre --help` does not load torch or the web stack.
    import uvicorn

    import timbre
    from timbre.errors import ConfigError
    from timbre.serve import Instrument, create_app

    listener = _listen(args.host, args.port)
    model = timbre.load(args.model, device=args.device)
    try:
        instrument = Instrument(model, corners=args.corners)
    except ConfigError as error:
        raise ConfigError(f"--corners: {error}") from None
    loopback = _is_loopback(args.host)
    app = create_app(
        instrument,
        cache_bytes=args.cache_mb * 1024 * 1024,
        max_batch=args.max_batch,
        allowed_hosts=[*LOOPBACK_NAMES, args.host] if loopback else None,
    )
    host, port = listener.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"timbre serve: open http://{shown}:{port}/ "
        f"(model {model.name}, corners {', '.join(instrument.default_corners)})"
    )
    if not loopback:
        print(
            f"warning: listening on {args.host}: anyone who can reach this machine can use the instrument",
            file=sys.stderr,
        )
    sys.stdout.flush()
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    try:
        uvicorn.Server(config).run(sockets=[listener])
    except KeyboardInterrupt:
        # uvicorn re-raises the Ctrl-C it shut down on; for a server that is the normal way to stop.
        pass
    print("timbre serve: stopped")
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, so a taken port fails here with one clear line."""
    from timbre.errors import ConfigError

    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say TCP,
        # and with Nagle on, every keep-alive response waits ~40 ms for a delayed ACK.
        listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
    except (OSError, OverflowError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise ConfigError(f"cannot listen on --host {host} --port {port}: {reason}") from None
    listener.listen(128)
    return listener


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
