"""The bottom layer: files written atomically, folder locks, safetensors checkpoints and user arrays."""
