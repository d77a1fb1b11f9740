"""Client-facing wire formats other than OpenAI's.

The gateway's core speaks OpenAI chat completions end to end; an inbound module
translates another API's requests into that shape and the answers back, as pure
functions with no I/O, so every configured model serves every inbound API.
"""
