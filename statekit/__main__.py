"""``python -m statekit``: the same command as ``statekit``."""

from .cli import main

if __name__ == "__main__":
    main()
