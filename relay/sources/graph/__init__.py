"""The Microsoft Graph backend: subscriptions, notifications and delta catch-up."""
