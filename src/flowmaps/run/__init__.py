"""A run: its typed config, the pieces built from it, its directory and the trainer."""
