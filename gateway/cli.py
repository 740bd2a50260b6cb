"""The ``accessgw`` command: run the daemon, the demo, support tools and simulators."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.errors import AccessGwError, ConfigError, InvalidSet
from gateway.state_dir import make_files_private

EXIT_OK, EXIT_PROBLEMS, EXIT_BAD_INPUT = 0, 1, 2
BIG_SET_BYTES = 8 << 20  # a set file this big takes seconds to read: say so at once


class BadInput(AccessGwError):
    """A command-line argument or input file is wrong; exit 2 with this message."""


def _read_json(path: str, what: str, *, big: bool = False) -> Any:
    """The JSON of a file. ``big``: decoded by pydantic-core's parser (jiter), which takes a
    million-member set in about half the time of ``json`` (same values: integers of any
    size, the last of a repeated key)."""
    try:
        if big:
            import pydantic_core  # here: the other commands start without it

            return pydantic_core.from_json(Path(path).read_bytes(), cache_strings="keys")
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{what} file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{what} file {path} cannot be read: {exc}") from None
    except ValueError as exc:  # json.JSONDecodeError, or pydantic-core's for a big one
        raise BadInput(f"{what} file {path} is not valid JSON: {exc}") from None


# ``decide`` refuses instants outside these years: date arithmetic near year 1 or 9999
# (a day before, a week after) would overflow, and no membership is decided there.
EARLIEST_YEAR, LATEST_YEAR = 1970, 9000
MAX_CREDENTIAL = 4096  # characters of --nfc/--code/--pass (a phone pass is ~200)


def _instant(text: str) -> datetime:
    _text("--at", text, 64)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(
            f"--at {text!r} is not an ISO 8601 time (e.g. 2026-11-22T18:00:00+01:00)"
        ) from None
    if at.tzinfo is None:
        raise BadInput(f"--at {text!r} needs a UTC offset, e.g. 2026-11-22T18:00:00+01:00")
    try:
        year = at.astimezone(UTC).year
    except OverflowError:
        year = 0 if at.year < 5000 else 10_000
    if not EARLIEST_YEAR <= year <= LATEST_YEAR:
        raise BadInput(f"--at {text!r} must be between the years {EARLIEST_YEAR} and {LATEST_YEAR}")
    return at


def _text(option: str, value: str, limit: int) -> str:
    """A command-line text: valid UTF-8 (no undecodable bytes) and at most ``limit`` long."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        shown = value.encode("utf-8", "replace")[:40]
        raise BadInput(f"{option} contains bytes that are not UTF-8 text ({shown!r})") from None
    if len(value) > limit:
        raise BadInput(f"{option} is {len(value)} characters long; at most {limit} are taken")
    return value


def _decide_inputs(args: argparse.Namespace) -> None:
    """Every text option of ``decide`` checked before anything reads it."""
    for option, value, limit in (
        ("--site", args.site, 256),
        ("--zone", args.zone, 256),
        ("--door", args.door, 256),
        ("--lang", args.lang, 16),
        ("--format", args.format, 32),
        ("--nfc", args.nfc, MAX_CREDENTIAL),
        ("--code", args.code, MAX_CREDENTIAL),
        ("--pass", args.pass_token, MAX_CREDENTIAL),
    ):
        if value is not None:
            _text(option, value, limit)
    if args.nfc is not None and args.format is not None:
        number = args.nfc.strip()
        if not (number.isascii() and number.isdigit() and len(number) <= 20):
            raise BadInput(
                f"--nfc {args.nfc[:40]!r} with --format {args.format}: a card number is "
                "1 to 20 digits 0-9"
            )


def cmd_decide(args: argparse.Namespace) -> int:
    """``accessgw decide``: why was this member refused? Prints one JSON object.

    Never a traceback: every input is checked first, and what still cannot be decided
    (a value no check foresaw) is a clear error with exit 2, as a support tool should.
    """
    _decide_inputs(args)
    try:
        return _decide(args)
    except (ValueError, ArithmeticError, UnicodeError, RecursionError, LookupError) as exc:
        raise BadInput(f"cannot decide with these inputs ({type(exc).__name__}: {exc})") from None


def _decide(args: argparse.Namespace) -> int:
    from gateway.decision import DoorContext, Presented, Request, decide
    from gateway.entitlements import credential_key
    from gateway.messages import render
    from gateway.passes import parse_pass
    from gateway.set_scan import Progress, ScanFailed, Wanted, scan_file, scan_set, stderr_line
    from gateway.state import LocalState, state_from_json

    at = _instant(args.at)
    if args.nfc is not None:
        presented = Presented("nfc", args.nfc, args.format)
    elif args.code is not None:
        presented = Presented("code", args.code)
    else:
        presented = Presented("pass", args.pass_token)
    if presented.kind == "pass":
        claim = parse_pass(presented.value)
        wanted = Wanted(member=None if isinstance(claim, str) else claim.member)
    else:
        wanted = Wanted(key=credential_key(presented.kind, presented.value, presented.format))
    try:  # the whole set is validated; only the records the decision reads are kept
        size = os.path.getsize(args.set) if os.path.isfile(args.set) else 0
        opening = None
        if size > BIG_SET_BYTES:
            opening = f"decide: reading {args.set} ({size / 2**20:.0f} MiB), then validating it"
        # No cyclic garbage collection meanwhile: a million decoded records are millions of
        # live objects, and every collection would walk them all again (it was over half
        # of the validation's time); reference counting frees them once the scan is done.
        gc.disable()
        with Progress(stderr_line, opening) as progress:
            view = None
            with contextlib.suppress(OSError):  # if so, read whole: that says what is wrong
                view = scan_file(args.set, wanted, progress=progress)
            if view is None:  # one core, a small file, or one that does not cut cleanly
                raw = _read_json(args.set, "set", big=True)
                view = scan_set(raw, wanted, progress=progress, release=True)
                del raw  # the decoded file, a gigabyte for a million members, freed here
    except InvalidSet as exc:
        raise BadInput("the set is invalid:\n  " + "\n  ".join(exc.problems[:10])) from None
    except ScanFailed as exc:
        raise BadInput(f"the set could not be checked: {exc}") from None
    finally:
        gc.enable()
    state = LocalState()
    if args.state:
        try:
            state = state_from_json(_read_json(args.state, "state"), until=at)
        except (ValueError, KeyError, TypeError) as exc:
            raise BadInput(f"state file {args.state}: {exc}") from None
    door = DoorContext(args.door, args.zone, args.direction, site=args.site)
    decision = decide(Request(presented, door, at), view, state)
    assert view.rules is not None
    message = render(decision.reason, decision.display, args.lang, view.rules.messages)
    print(json.dumps(decision.summary(message), ensure_ascii=False, indent=2))
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    """``accessgw check-config FILE``: ``ok``, or every problem and exit 1.

    The same validation as ``run`` and the web UI (:mod:`gateway.validation`); warnings are
    listed apart and do not fail.
    """
    from gateway.validation import validate_file

    report = validate_file(args.file)
    if args.json:
        print(json.dumps(report.as_json(), ensure_ascii=False, indent=2))
        return EXIT_OK if report.ok else EXIT_PROBLEMS
    for warning in report.warnings:
        print(f"{report.file}: warning: {warning}", file=sys.stderr)
    if not report.ok:
        print(f"{report.file}: {len(report.problems)} problem(s)", file=sys.stderr)
        for problem in report.problems:
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
    from gateway.daemon import run_daemon

    return run_daemon(args)


def cmd_demo(args: argparse.Namespace) -> int:
    """``accessgw demo``: the gateway on simulated hardware."""
    from gateway.demo import run_demo

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


DEFAULT_CONFIG = "/etc/accessgw/accessgw.toml"
PASSPHRASE_ENV = "ACCESSGW_BACKUP_PASSPHRASE"


def _passphrase(args: argparse.Namespace, *, twice: bool) -> str:
    """The backup passphrase: --passphrase-file, $ACCESSGW_BACKUP_PASSPHRASE, or asked."""
    import getpass
    import os

    if args.passphrase_file:
        try:
            return Path(args.passphrase_file).read_text(encoding="utf-8").rstrip("\n")
        except OSError as exc:
            raise BadInput(f"passphrase file {args.passphrase_file}: {exc.strerror}") from None
    if os.environ.get(PASSPHRASE_ENV):
        return os.environ[PASSPHRASE_ENV]
    if not sys.stdin.isatty():
        raise BadInput(f"no passphrase: use --passphrase-file or ${PASSPHRASE_ENV}")
    first = getpass.getpass("backup passphrase: ")
    if twice and getpass.getpass("the same again: ") != first:
        raise BadInput("the two passphrases differ")
    return first


def cmd_backup(args: argparse.Namespace) -> int:
    """``accessgw backup FILE``: config, secrets, journal in one encrypted archive."""
    from gateway.backup import create_backup
    from gateway.state_dir import write_secret_atomically

    sealed = create_backup(args.config or DEFAULT_CONFIG, _passphrase(args, twice=True))
    write_secret_atomically(Path(args.file).resolve(), sealed)
    print(f"backup of {args.config or DEFAULT_CONFIG} written to {args.file} ({len(sealed)} bytes)")
    return EXIT_OK


def cmd_restore(args: argparse.Namespace) -> int:
    """``accessgw restore FILE``: this box becomes the gateway of the backup."""
    from gateway.backup import restore_backup

    try:
        sealed = Path(args.file).read_bytes()
    except OSError as exc:
        raise BadInput(f"backup file {args.file}: {exc.strerror}") from None
    result = restore_backup(
        sealed,
        _passphrase(args, twice=False),
        config_path=args.config,
        state_dir=args.state_dir,
        force=args.force,
        at_next_start=args.at_next_start,
    )
    if result.staged_only:
        print(
            f"restore of gateway {result.gateway} of site {result.site} checked and staged in "
            f"{result.state_dir}: it is applied when the gateway next starts "
            "(systemctl restart accessgw); what the box holds now is then moved aside"
        )
        return EXIT_OK
    kept = f"; what was there is kept in {result.replaced}" if result.replaced else ""
    print(
        f"restored gateway {result.gateway} of site {result.site}: config {result.config_path}, "
        f"state {result.state_dir}{kept}. Start it with: accessgw run {result.config_path}"
    )
    return EXIT_OK


DESCRIPTION = """\
accessgw: the access-control gateway at a door. It reads badges, QR codes and
phone passes, decides against the locally cached entitlement set, drives the
relays and syncs check-ins with the central system over MQTT."""

EXAMPLES = """\
examples:
  accessgw check-config /etc/accessgw/accessgw.toml
      validate a config file; prints ok, or every problem with key and line
  accessgw check-config --json /etc/accessgw/accessgw.toml
      the same as JSON, for tools
  accessgw run /etc/accessgw/accessgw.toml
      run the gateway (systemd does this: systemd/accessgw.service)
  accessgw demo --seconds 60
      the gateway on simulated hardware, web UI on http://127.0.0.1:8080/
  accessgw decide --set set.json --site oslo --zone gym --direction in \\
      --at 2026-11-22T18:00:00+01:00 --nfc 04A2B3C4
      why was this member let in or refused?
  accessgw backup /root/door-1.agwbak
      config, keys and unsent check-ins in one file encrypted with a passphrase
  accessgw restore --state-dir /var/lib/accessgw /root/door-1.agwbak
      a replacement box becomes the same gateway (docs/replacing-a-gateway.md)
  accessgw simulate pn532 --help
      run one simulator on a pty

Each command has its own help: accessgw COMMAND --help.
Exit status: 0 ok, 1 problems found (or the gateway failed), 2 bad arguments or input."""


def _parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_: str,
    examples: str = "",
) -> argparse.ArgumentParser:
    """A sub-command whose help is plain text with its examples."""
    return sub.add_parser(
        name,
        help=help_,
        description=help_[:1].upper() + help_[1:] + ".",
        epilog=f"examples:\n{examples}" if examples else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``accessgw``."""
    parser = argparse.ArgumentParser(
        prog="accessgw",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"accessgw {__version__}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = _parser(
        sub, "run", "run the gateway daemon", "  accessgw run /etc/accessgw/accessgw.toml"
    )
    run.add_argument("config", help="the TOML config file")
    run.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=None,
        help="what to log (default: [log] level, else info)",
    )
    run.add_argument(
        "--log-format",
        choices=["auto", "json", "text"],
        default=None,
        help="json lines or text (default auto: text on a terminal, json otherwise)",
    )
    run.set_defaults(func=cmd_run)

    demo = _parser(
        sub, "demo", "run the gateway on simulated hardware", "  accessgw demo --seconds 60"
    )
    demo.add_argument("--state-dir", default=None, help="where the demo keeps its state")
    demo.add_argument("--port", type=int, default=8080, help="web UI port on 127.0.0.1")
    demo.add_argument("--seconds", type=float, default=None, help="stop after this long")
    demo.set_defaults(func=cmd_demo)

    check = _parser(
        sub,
        "check-config",
        "validate a config file: ok, or every problem with key and line",
        "  accessgw check-config /etc/accessgw/accessgw.toml\n"
        "  accessgw check-config --json /etc/accessgw/accessgw.toml",
    )
    check.add_argument("file", help="the TOML config file")
    check.add_argument("--json", action="store_true", help="print one JSON object, for tools")
    check.set_defaults(func=cmd_check_config)

    decide = _parser(
        sub,
        "decide",
        "decide one presentation offline and explain it",
        "  accessgw decide --set set.json --site oslo --zone gym --direction in \\\n"
        "      --at 2026-11-22T18:00:00+01:00 --nfc 04A2B3C4",
    )
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

    ident = _parser(
        sub,
        "id",
        "print this gateway's id, site and public key, for registration in the central "
        "system (the key pair is made on first use)",
        "  accessgw id /etc/accessgw/config.toml\n",
    )
    ident.add_argument("config", help="the TOML config file")
    ident.set_defaults(func=cmd_id)

    from gateway.web.commands import add_commands

    add_commands(sub)

    backup = _parser(
        sub,
        "backup",
        "write config, secrets and the unacknowledged journal to one encrypted file",
        "  accessgw backup /root/door-1.agwbak\n"
        "  accessgw backup --config /etc/accessgw/accessgw.toml --passphrase-file p.txt f",
    )
    backup.add_argument("file", help="the backup file to write")
    restore = _parser(
        sub,
        "restore",
        "make this box the gateway of a backup (gateway stopped, or --at-next-start)",
        "  accessgw restore /root/door-1.agwbak\n"
        "  accessgw restore --state-dir /var/lib/accessgw --config /etc/accessgw/accessgw.toml "
        "f\n"
        "  accessgw restore --at-next-start /root/door-1.agwbak && "
        "systemctl restart accessgw",
    )
    restore.add_argument("file", help="the backup file to read")
    restore.add_argument("--state-dir", help="restore the state here (default: as backed up)")
    restore.add_argument(
        "--force", action="store_true", help="replace existing state/files (moved aside)"
    )
    restore.add_argument(
        "--at-next-start",
        action="store_true",
        help="check and stage it now, apply it when the (running) gateway next starts",
    )
    backup.add_argument("--config", help=f"the config file (default: {DEFAULT_CONFIG})")
    restore.add_argument("--config", help="where to write the config (default: as backed up)")
    for command in (backup, restore):
        command.add_argument(
            "--passphrase-file", help=f"read the passphrase from a file (or ${PASSPHRASE_ENV})"
        )
    backup.set_defaults(func=cmd_backup)
    restore.set_defaults(func=cmd_restore)

    version = _parser(sub, "version", "print the version")
    version.set_defaults(func=cmd_version)

    simulate = _parser(
        sub,
        "simulate",
        "run a simulator: pn532, scanner, osdp, relay-board, turnstile, central",
        "  accessgw simulate relay-board --help",
    )
    simulate.add_argument(
        "kind", choices=["pn532", "scanner", "osdp", "relay-board", "turnstile", "central"]
    )
    simulate.add_argument("rest", nargs=argparse.REMAINDER, help="the simulator's own arguments")
    simulate.set_defaults(func=cmd_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``accessgw`` console command."""
    make_files_private()  # state, secrets and databases: 0700/0600 whoever runs us
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except BadInput as exc:
        print(f"accessgw {args.command}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ConfigError as exc:
        print(
            f"accessgw {args.command}: {exc.path}: {len(exc.problems)} problem(s)", file=sys.stderr
        )
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_PROBLEMS
    except AccessGwError as exc:
        print(f"accessgw {args.command}: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
