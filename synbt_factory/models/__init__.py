"""Networks and their loaders. Models import nothing from store, training, data or the CLI (only checkpoint, config,
device and rng-level modules, and other models)."""
