"""``python -m diswoot``: run the daemon (same as ``diswoot run``)."""

if __name__ == "__main__":
    from diswoot import early_signals

    early_signals.install()  # before the heavy imports: a SIGTERM now still means exit 0
    from diswoot.cli import main

    raise SystemExit(main())
