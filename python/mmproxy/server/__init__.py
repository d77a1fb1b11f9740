"""The HTTP front end: routes, handlers, stream relay, process model."""
