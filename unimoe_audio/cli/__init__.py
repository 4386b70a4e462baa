"""The `unimoe-audio` command line: one module per subcommand group, each with `register()`."""
