"""`python -m cvat_plugin.cli`: the same as `cvat-detr`."""

from cvat_plugin.cli.app import main

raise SystemExit(main())
