"""``python -m cas_store.cli``: the ``cas-store`` command."""

from cas_store.cli import main

main(prog_name="cas-store")
