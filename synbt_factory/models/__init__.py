"""Networks. Models import nothing from store, training or the CLI."""
