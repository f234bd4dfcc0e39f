"""``python -m diswoot``: run the daemon (same as ``diswoot run``)."""

from diswoot.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
