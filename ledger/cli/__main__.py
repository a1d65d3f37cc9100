"""``python -m ledger.cli``: the same as the ``govledger`` console script."""

from ledger.cli import main

main()
