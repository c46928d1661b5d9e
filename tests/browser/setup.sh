#!/usr/bin/env bash
# Installs what tests/browser/status_page.py needs, on Debian (as root): the system
# Chromium from apt and Playwright's Python package from PyPI. No `playwright
# install`: the test drives the system Chromium (executable_path), no browser is
# downloaded. Idempotent: what is there already is left as it is.
set -euo pipefail
if ! command -v chromium >/dev/null; then
    apt-get update
    apt-get install -y chromium
fi
if ! python3 -c 'import playwright.sync_api' 2>/dev/null; then
    python3 -m pip install playwright
fi
echo "browser test tools: $(command -v chromium), playwright $(python3 -m pip show playwright | sed -n 's/^Version: //p')"
