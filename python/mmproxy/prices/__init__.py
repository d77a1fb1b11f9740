"""Model prices: the shipped table's generator (``update``), price files in mmproxy's and LiteLLM's shapes
(``files``) and ``mmproxy prices import`` (``cli``). The lookup itself is ``mmproxy.registry``."""
