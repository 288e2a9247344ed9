"""`make demo`: a small, realistic world poured into a running `make run` stack through the
public APIs and outside-system events (see `world` for what, `fill` for how)."""
