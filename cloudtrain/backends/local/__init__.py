"""The local backend: every stage on this machine, spot reclaims simulated."""
