"""``python -m bench``: the benchmark suite against the peers (see bench/README.md).

``python -m bench gc [...]`` runs the collector benchmark instead (:mod:`bench.collection`).
"""

import sys

if sys.argv[1:2] == ["gc"]:
    from bench.collection import main as gc_main

    sys.exit(gc_main(sys.argv[2:]))

from bench.suite import main

sys.exit(main())
