"""``python -m mmproxy.simulator --port 8800 [knobs]``."""

from .cli import main

main()
