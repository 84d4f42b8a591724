"""`python -m cvat_plugin.gateway`: the same as `detr-gateway`."""

from cvat_plugin.gateway.app import main

raise SystemExit(main())
