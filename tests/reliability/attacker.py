"""Someone else with write access to the store: ``python attacker.py save|load URL ENTITY MARKER``.

Run by test_hostile.py with the attacker's own ``STATEKIT_KEY``. ``save``
stores a value whose unpickling would call ``os.mkdir(MARKER)`` (any code
could run there: that call is the evidence), as a pickle signed with the
attacker's key. ``load`` reads it back with that same key: the positive
control that shows the payload really runs code when it is trusted.
"""

from __future__ import annotations

import os
import sys

from statekit import StateManager


class Payload:
    """Pickles as ``os.mkdir(marker)``: unpickling it creates the marker (a folder)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (self.marker,))


def main() -> None:
    mode, url, entity, marker = sys.argv[1:5]
    with StateManager(url) as sm:
        if mode == "save":
            snap = sm.save(entity, {"x": 2, "evil": Payload(marker)}, allow_pickle=True,
                           message="looks harmless", actor="mallory")
            print(snap.version)
        elif mode == "load":
            sm.load(entity, int(sys.argv[5]))
            print("loaded")


if __name__ == "__main__":
    main()
