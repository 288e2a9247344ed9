"""Signed webhooks (Standard Webhooks) both services offer: tables (`models`), the fan-out
the outbox relay runs and the delivery worker (`delivery`), the SSRF guard (`targets`) and the
`/v1/webhooks` routes (`router`)."""
