"""Sweeps: design spaces and designs (`space`, `design`), the driver and the experiment store."""
