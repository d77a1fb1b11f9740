"""The dashboard at ``/ui``: what the gateway does, read from the ledger, the router and a live request feed.

No build step and nothing fetched: the pages are rendered here and their script is a plain ES module beside a
vendored chart library (uPlot, MIT), all inside the package.
"""
