"""Internal: see `cryoensemble.simulator` for the public names."""
