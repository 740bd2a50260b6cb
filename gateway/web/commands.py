"""The web UI's console commands: ``setup-code``, ``passwd`` and ``why`` (root, on the box)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys

from gateway.config import Config, load_config
from gateway.errors import AccessGwError
from gateway.web.auth import password_problem, read_setup_code, set_password
from gateway.web.i18n import t

DEFAULT_CONFIG = "/etc/accessgw/accessgw.toml"


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def _root_only(what: str) -> None:
    if os.geteuid() != 0:
        raise AccessGwError(
            f"{what} reads the gateway's secrets: run it as root (sudo accessgw ...)"
        )


def cmd_setup_code(args: argparse.Namespace) -> int:
    """``accessgw setup-code``: the one-time code for the first sign-in, if still unused."""
    _root_only("setup-code")
    secrets_dir = _config(args).gateway.state_dir / "secrets"
    try:
        code = read_setup_code(secrets_dir)
    except PermissionError:
        raise AccessGwError(f"cannot read {secrets_dir}: run as root") from None
    if code is None:
        if (secrets_dir / "installer.hash").exists():
            print("the installer password is set already; use `accessgw passwd` to change it")
        else:
            print("no setup code yet: start the gateway once (it makes one and logs it)")
        return 1
    print(code)
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    """``accessgw passwd``: set a new installer password from the box's console."""
    _root_only("passwd")
    secrets_dir = _config(args).gateway.state_dir / "secrets"
    if args.stdin:
        password = sys.stdin.readline().rstrip("\n")
        again = password
    else:
        password = getpass.getpass("New installer password: ")
        again = getpass.getpass("Same password again: ")
    differ = t("en", "password.differ") if password != again else None
    problem = password_problem(password) or differ
    if problem:
        raise AccessGwError(problem)
    set_password(secrets_dir, password)
    print("installer password set; sign in again in the web UI")
    return 0


def cmd_why(args: argparse.Namespace) -> int:
    """``accessgw why --member M1001 [--door main-in]``: the box's own answer, as JSON."""
    from gateway.web.why import why

    answer = why(_config(args), args.member, args.door)
    print(json.dumps(answer, ensure_ascii=False, indent=2, default=str))
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the web UI's commands to ``accessgw``'s parser."""
    code = sub.add_parser("setup-code", help="show the one-time code for the first web sign-in")
    code.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
    code.set_defaults(func=cmd_setup_code)
    passwd = sub.add_parser("passwd", help="set the installer password of the web UI")
    passwd.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
    passwd.add_argument("--stdin", action="store_true", help="read the password from stdin")
    passwd.set_defaults(func=cmd_passwd)
    why = sub.add_parser("why", help="why was this member refused? (reads the running gateway)")
    why.add_argument("--member", required=True, help="member or ticket id, e.g. M1001")
    why.add_argument("--door", help="also decide 'what would happen now' at this door")
    why.add_argument("--config", default=DEFAULT_CONFIG)
    why.set_defaults(func=cmd_why)
