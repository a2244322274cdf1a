"""Telling people: alert channels (e-mail, webhooks, dead-man heartbeats), the rules that
decide when, and the SMTP sender that reports share."""
