"""``python -m bench``: the benchmark suite against the peers (see bench/README.md).

``python -m bench gc [...]`` runs the collector benchmark instead (:mod:`bench.collection`),
``python -m bench chunking [...]`` the chunking benchmark (:mod:`bench.chunking`),
``python -m bench compression [...]`` compression through cas_store (:mod:`bench.compression`).
"""

import sys

if sys.argv[1:2] == ["gc"]:
    from bench.collection import main as gc_main

    sys.exit(gc_main(sys.argv[2:]))
if sys.argv[1:2] == ["chunking"]:
    from bench.chunking import main as chunking_main

    sys.exit(chunking_main(sys.argv[2:]))
if sys.argv[1:2] == ["compression"]:
    from bench.compression import main as compression_main

    sys.exit(compression_main(sys.argv[2:]))

from bench.suite import main

sys.exit(main())
