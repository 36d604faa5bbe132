"""``python -m clickwire`` is the ``clickwire`` command."""

from clickwire.cli import main

main()
