"""The README demo: ``python -m demo.run_demo`` (``tox -e demo``)."""
