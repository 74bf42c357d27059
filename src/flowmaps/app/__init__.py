"""What a user runs: the command line, evaluation tables, the demo and figures."""
