"""The ``accessgw`` command: run the daemon, the demo, support tools and simulators."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.errors import AccessGwError, ConfigError, InvalidSet

EXIT_OK, EXIT_PROBLEMS, EXIT_BAD_INPUT = 0, 1, 2


class BadInput(AccessGwError):
    """A command-line argument or input file is wrong; exit 2 with this message."""


def _read_json(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{what} file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{what} file {path} cannot be read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"{what} file {path} is not valid JSON: {exc}") from None


def _instant(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(
            f"--at {text!r} is not an ISO 8601 time (e.g. 2026-11-22T18:00:00+01:00)"
        ) from None
    if at.tzinfo is None:
        raise BadInput(f"--at {text!r} needs a UTC offset, e.g. 2026-11-22T18:00:00+01:00")
    return at


def cmd_decide(args: argparse.Namespace) -> int:
    """``accessgw decide``: why was this member refused? Prints one JSON object."""
    from gateway.decision import DoorContext, Presented, Request, decide
    from gateway.entitlements import parse_set
    from gateway.messages import render
    from gateway.state import LocalState, state_from_json
    from gateway.store import EntitlementStore

    at = _instant(args.at)
    try:
        version, rules, records = parse_set(_read_json(args.set, "set"))
    except InvalidSet as exc:
        raise BadInput("the set is invalid:\n  " + "\n  ".join(exc.problems[:10])) from None
    state = LocalState()
    if args.state:
        try:
            state = state_from_json(_read_json(args.state, "state"), until=at)
        except (ValueError, KeyError, TypeError) as exc:
            raise BadInput(f"state file {args.state}: {exc}") from None
    store = EntitlementStore.open(":memory:", b"accessgw-decide")
    try:
        store.replace(version, rules, records, {}, at)
        if args.nfc is not None:
            presented = Presented("nfc", args.nfc, args.format)
        elif args.code is not None:
            presented = Presented("code", args.code)
        else:
            presented = Presented("pass", args.pass_token)
        door = DoorContext(args.door, args.zone, args.direction, site=args.site)
        decision = decide(Request(presented, door, at), store, state)
    finally:
        store.close()
    message = render(decision.reason, decision.display, args.lang, rules.messages)
    print(json.dumps(decision.summary(message), ensure_ascii=False, indent=2))
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    """``accessgw check-config FILE``: ``ok``, or every problem and exit 1."""
    from gateway.config import BoardConfig, ReaderConfig, load_config
    from gateway.profiles import find_profile

    try:
        config = load_config(args.file)
        problems = []
        items: list[ReaderConfig | BoardConfig] = [*config.readers, *config.boards]
        for item in items:
            try:
                find_profile(item.profile)
            except ConfigError as exc:
                problems.append(f"{item.id}: " + "; ".join(exc.problems))
        if problems:
            raise ConfigError(args.file, problems)
    except ConfigError as exc:
        print(f"{exc.path}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_PROBLEMS
    print("ok")
    return EXIT_OK


def cmd_id(args: argparse.Namespace) -> int:
    """``accessgw id CONFIG``: this gateway's id, site and public key, for registration."""
    from gateway.identity import describe_identity

    print(json.dumps(describe_identity(args.config)))
    return EXIT_OK


def cmd_version(args: argparse.Namespace) -> int:
    """``accessgw version``."""
    print(f"accessgw {__version__}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """``accessgw run CONFIG``: the daemon."""
    try:
        from gateway.daemon import run_daemon
    except ImportError:
        print("accessgw run: not built yet", file=sys.stderr)
        return EXIT_PROBLEMS
    return run_daemon(args)


def cmd_demo(args: argparse.Namespace) -> int:
    """``accessgw demo``: the gateway on simulated hardware."""
    try:
        from gateway.demo import run_demo
    except ImportError:
        print("demo not built yet")
        return EXIT_OK
    return run_demo(args)


def cmd_simulate(args: argparse.Namespace) -> int:
    """``accessgw simulate KIND ...``: run one simulator (it prints what it serves)."""
    import importlib

    modules = {
        "pn532": "simulators.pn532",
        "scanner": "simulators.scanner",
        "osdp": "simulators.osdp_pd",
        "relay-board": "simulators.relay_board",
        "turnstile": "simulators.turnstile",
        "central": "simulators.central",
    }
    try:
        module = importlib.import_module(modules[args.kind])
    except ImportError as exc:
        raise BadInput(f"simulator {args.kind} is not available: {exc}") from None
    result = module.main(list(args.rest))
    return int(result) if isinstance(result, int) else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``accessgw``."""
    parser = argparse.ArgumentParser(prog="accessgw", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the gateway daemon")
    run.add_argument("config", help="the TOML config file")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="run the gateway on simulated hardware")
    demo.add_argument("--state-dir", default=None, help="where the demo keeps its state")
    demo.add_argument("--port", type=int, default=8080, help="web UI port on 127.0.0.1")
    demo.add_argument("--seconds", type=float, default=None, help="stop after this long")
    demo.set_defaults(func=cmd_demo)

    check = sub.add_parser("check-config", help="validate a config file: ok, or every problem")
    check.add_argument("file")
    check.set_defaults(func=cmd_check_config)

    decide = sub.add_parser("decide", help="decide one presentation offline and explain it")
    decide.add_argument(
        "--set", required=True, help="entitlement set JSON: version, rules, records"
    )
    decide.add_argument("--site", required=True)
    decide.add_argument("--zone", required=True)
    decide.add_argument("--direction", required=True, choices=["in", "out"])
    decide.add_argument("--at", required=True, help="ISO 8601 instant with offset")
    decide.add_argument("--door", default="door", help="door id (for the trace)")
    decide.add_argument("--state", help="local state JSON (README: STATE.json)")
    decide.add_argument("--lang", default="en", help="message language: en, nb, da, fr")
    decide.add_argument("--format", default=None, help="card number format with --nfc (wiegand26)")
    which = decide.add_mutually_exclusive_group(required=True)
    which.add_argument("--nfc", help="card UID (hex) or card number (with --format)")
    which.add_argument("--code", help="barcode/QR value")
    which.add_argument("--pass", dest="pass_token", help="phone-pass token AGP1....")
    decide.set_defaults(func=cmd_decide)

    ident = sub.add_parser(
        "id", help="print this gateway's id, site and public key (made on first use)"
    )
    ident.add_argument("config", help="the TOML config file")
    ident.set_defaults(func=cmd_id)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=cmd_version)

    simulate = sub.add_parser(
        "simulate", help="run a simulator: pn532, scanner, osdp, relay-board, turnstile, central"
    )
    simulate.add_argument(
        "kind", choices=["pn532", "scanner", "osdp", "relay-board", "turnstile", "central"]
    )
    simulate.add_argument("rest", nargs=argparse.REMAINDER, help="the simulator's own arguments")
    simulate.set_defaults(func=cmd_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``accessgw`` console command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except BadInput as exc:
        print(f"accessgw {args.command}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ConfigError as exc:
        print(f"accessgw {args.command}: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    except AccessGwError as exc:
        print(f"accessgw {args.command}: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
