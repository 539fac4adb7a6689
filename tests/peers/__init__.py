"""Real peers that tests and benchmarks talk to, one module each (Dovecot, a TCP proxy...)."""
