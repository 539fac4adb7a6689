"""Webhook delivery: signing, retry schedule, SSRF guard and the delivery worker."""
