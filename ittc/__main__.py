"""``python -m ittc``: the same as the ``ittc`` console script."""

from ittc.cli import main

raise SystemExit(main())
