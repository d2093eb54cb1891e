"""bin/bench's load generator and phases (see mlbench.main)."""
