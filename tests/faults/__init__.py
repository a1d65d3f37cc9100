"""Fault injection against ``govledger up``: SIGKILL/SIGSTOP of each process under load.

``python -m tests.faults.inject --help``; docs/faults.md says what it checks and its figures.
"""
