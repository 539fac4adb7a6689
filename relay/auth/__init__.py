"""Credentials: API tokens, secret encryption, OAuth2 apps, delegated-account resolution."""
