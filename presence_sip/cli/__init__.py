"""Command-line interface: one module per subcommand, wired in :mod:`presence_sip.cli.main`."""
