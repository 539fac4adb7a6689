"""HTML pages of the sandbox's sign-in flow. Every value is escaped by the caller."""

from __future__ import annotations

from html import escape
from string import Template

_PAGE = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
body { font-family: system-ui, sans-serif; background: #f2f2f2; margin: 0; }
main { max-width: 26rem; margin: 4rem auto; background: #fff; padding: 2rem;
       box-shadow: 0 2px 6px rgba(0,0,0,.2); }
h1 { font-size: 1.4rem; margin-top: 0; }
label { display: block; margin-top: 1rem; }
input[type=email], input[type=password] { width: 100%; padding: .4rem; box-sizing: border-box; }
ul { padding-left: 1.2rem; }
.error { color: #a80000; }
.buttons { margin-top: 1.5rem; display: flex; gap: .5rem; justify-content: flex-end; }
small { color: #555; }
</style>
</head>
<body><main>
$body
</main></body>
</html>
""")

_SIGN_IN = Template("""<h1>Sign in to $app</h1>
<p><small>relay sandbox &middot; tenant $tenant</small></p>
$error
<form method="post" action="$action">
<input type="hidden" name="flow" value="$flow">
<label>Email
<input type="email" name="login" value="$login" autocomplete="username" required></label>
<label>Password
<input type="password" name="passwd" autocomplete="current-password"></label>
<p>$app asks for permission to:</p>
<ul>
$scopes
</ul>
<div class="buttons">
<button type="submit" name="action" value="cancel">Cancel</button>
<button type="submit" name="action" value="accept">Accept</button>
</div>
</form>
""")

_FORM_POST = Template("""<h1>Returning to the app</h1>
<form method="post" action="$action" id="response">
$fields
<noscript><button type="submit">Continue</button></noscript>
</form>
<script>document.getElementById("response").submit();</script>
""")


def sign_in_page(
    *,
    app: str,
    tenant: str,
    action: str,
    flow: str,
    login: str,
    scopes: list[str],
    error: str | None = None,
) -> str:
    """The combined sign-in and consent page."""
    items = "\n".join(f"<li>{escape(scope)}</li>" for scope in scopes)
    body = _SIGN_IN.substitute(
        app=escape(app),
        tenant=escape(tenant),
        action=escape(action),
        flow=escape(flow),
        login=escape(login),
        scopes=items,
        error=f'<p class="error" role="alert">{escape(error)}</p>' if error else "",
    )
    return _PAGE.substitute(title="Sign in", body=body)


def error_page(error: str, description: str) -> str:
    """The page shown when the error cannot be sent back to the app."""
    body = (
        "<h1>Sorry, but we're having trouble signing you in.</h1>\n"
        f'<p class="error" id="error">{escape(error)}</p>\n'
        f'<p id="error_description">{escape(description)}</p>'
    )
    return _PAGE.substitute(title="Sign in error", body=body)


def form_post_page(action: str, fields: dict[str, str]) -> str:
    """An auto-submitting form that POSTs the response to the app (``response_mode=form_post``)."""
    inputs = "\n".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">'
        for name, value in fields.items()
    )
    body = _FORM_POST.substitute(action=escape(action), fields=inputs)
    return _PAGE.substitute(title="Working...", body=body)
