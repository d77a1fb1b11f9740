"""``python -m mmproxy``: the same as the ``mmproxy`` command."""

from mmproxy.cli import main

main()
