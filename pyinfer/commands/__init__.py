"""``pyinfer`` subcommands, one module each (see ``pyinfer.cli``)."""
