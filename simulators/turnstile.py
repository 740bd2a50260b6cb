"""A turnstile on a simulated Modbus relay board: it turns when its coil pulses and a
"person" walks through, and closes its rotation contact (a discrete input) once per turn.

People queue with :meth:`TurnstileSim.arrive`: on the next pulse of the open coil every
queued person walks through (one: a normal passage; two: two people on one grant;
``arrive(0)``: nobody comes). :meth:`jump` turns it with no pulse at all (someone climbs
over or pushes through). Everything runs on the board simulator's own thread.

Run by hand: ``python -m simulators.turnstile --tcp 5020`` (then type Enter to queue a
person, ``j`` Enter for a jumper).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from simulators.relay_board import RelayBoardSim


class TurnstileSim:
    """A turnstile wired to ``board``: open input on coil ``coil``, rotation on input
    ``rotation_input``."""

    def __init__(
        self,
        board: RelayBoardSim,
        *,
        coil: int = 0,
        rotation_input: int = 0,
        walk_seconds: float = 0.1,
        turn_seconds: float = 0.15,
    ) -> None:
        self.board, self.coil, self.rotation_input = board, coil, rotation_input
        self.walk_seconds, self.turn_seconds = walk_seconds, turn_seconds
        self.queued = 0
        self.rotations: list[float] = []  # time.monotonic() of each completed turn
        self._lock = threading.Lock()
        board.listeners.append(self._on_coil)

    def arrive(self, people: int = 1) -> None:
        """``people`` wait at the turnstile and walk through on the next open pulse."""
        with self._lock:
            self.queued += people

    def jump(self) -> None:
        """Someone goes through with no open pulse."""
        self.board.call_later(0, self._turn)

    def _on_coil(self, index: int, value: bool, at: float) -> None:
        if index != self.coil or not value:
            return
        with self._lock:
            people, self.queued = self.queued, 0
        for n in range(people):  # one after the other, a turn apart
            self.board.call_later(self.walk_seconds + n * 2 * self.turn_seconds, self._turn)

    def _turn(self) -> None:
        self.board.set_input(self.rotation_input, True)
        self.board.call_later(self.turn_seconds, self._turned)

    def _turned(self) -> None:
        self.board.set_input(self.rotation_input, False)
        with self._lock:
            self.rotations.append(time.monotonic())


def main(argv: list[str] | None = None) -> int:
    """``accessgw simulate turnstile``: a turnstile on a Modbus relay board simulator."""
    parser = argparse.ArgumentParser(prog="accessgw simulate turnstile", description=__doc__)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--tcp", type=int, metavar="PORT", help="Modbus TCP on 127.0.0.1:PORT")
    where.add_argument("--rtu", action="store_true", help="Modbus RTU on a new pty pair")
    parser.add_argument("--coil", type=int, default=0, help="the open input's relay")
    parser.add_argument("--rotation-input", type=int, default=0)
    args = parser.parse_args(argv)
    board = RelayBoardSim()
    if args.rtu:
        board.start_rtu()
        print(f"turnstile on Modbus RTU {board.path}", flush=True)
    else:
        board.start_tcp(args.tcp or 5020)
        print(f"turnstile on Modbus TCP {board.host}:{board.port}", flush=True)
    gate = TurnstileSim(board, coil=args.coil, rotation_input=args.rotation_input)
    board.listeners.append(lambda i, v, at: print(f"relay {i} {'ON' if v else 'off'}", flush=True))
    print("Enter: a person arrives; j Enter: someone jumps over; Ctrl-D: quit", flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "j":
                gate.jump()
            else:
                gate.arrive()
            print(f"queued {gate.queued}, turns so far {len(gate.rotations)}", flush=True)
    except KeyboardInterrupt:
        pass
    board.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
