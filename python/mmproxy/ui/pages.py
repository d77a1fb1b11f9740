"""The dashboard's two HTML pages, rendered on the server: the login form and the application shell.

Everything the caller supplies is escaped; the shell carries who is logged in (``data-admin``) so the script
shows key management only to the master key, which the API enforces anyway.
"""

from __future__ import annotations

from html import escape

from mmproxy import __version__

_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · mmproxy</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/ui/static/uPlot.min.css"><link rel="stylesheet" href="/ui/static/style.css">
</head>"""

CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


def login(error: str | None = None) -> str:
    notice = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    return (_HEAD.format(title="Log in") + f"""
<body class="login"><main>
<h1>mmproxy</h1>
<form method="post" action="/ui/login">
<label for="key">Master key or virtual key</label>
<input id="key" name="key" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Log in</button>
{notice}
</form>
<p class="muted">A virtual key sees its own requests and spend; the master key sees everything and manages keys.</p>
</main></body></html>""")


def shell(who: str, admin: bool) -> str:
    tabs = [("overview", "Overview"), ("routing", "Routing"), ("cache", "Cache"), ("deployments", "Deployments"),
            ("live", "Live")]
    if admin:
        tabs.append(("keys", "Keys"))
    nav = "".join(f'<a href="#{name}" data-tab="{name}">{label}</a>' for name, label in tabs)
    return (_HEAD.format(title="Dashboard") + f"""
<body data-admin="{'true' if admin else 'false'}">
<header><strong>mmproxy</strong><nav>{nav}</nav>
<span class="who">{escape(who)} · v{escape(__version__)}</span>
<form method="post" action="/ui/logout"><button type="submit" class="link">Log out</button></form></header>
<div class="controls"><label>Period <select id="period">
<option value="3600">last hour</option><option value="86400" selected>last 24 hours</option>
<option value="604800">last 7 days</option><option value="2592000">last 30 days</option></select></label>
<label>Group by <select id="group">
<option value="model">model asked for</option><option value="model_group">model served</option>
<option value="key">key</option><option value="team">team</option><option value="tier">tier</option>
<option value="provider">provider</option></select></label>
<button id="refresh" type="button">Refresh</button><span id="status" class="muted"></span></div>
<main id="view" aria-live="polite"></main>
<script src="/ui/static/uPlot.iife.min.js"></script>
<script type="module" src="/ui/static/app.js"></script>
</body></html>""")
