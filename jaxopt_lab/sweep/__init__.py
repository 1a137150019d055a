"""Sweeps: design spaces (`space`, `factors`), fixed designs (`design`), groups and their compiled
programs (`grouping`, `programs`, `jobs`), the driver, the experiment store, and the adaptive
designs (`adaptive`)."""
