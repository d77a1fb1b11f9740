"""``mmproxy bench``: a load tester for OpenAI-compatible and Anthropic endpoints, and the load generator the
repository's benchmarks (``benches/``) share with it."""
