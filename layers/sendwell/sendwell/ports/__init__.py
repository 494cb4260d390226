"""The interfaces and message formats that cross a boundary: the bottom of the import graph.

Imports go one way: handlers -> wiring -> services -> ports <- adapters. A service never imports
boto3, requests, smtplib or imaplib; it receives objects that satisfy these protocols, built in
``sendwell.wiring``. Adapters implement them and never import a service. The import contract in
pyproject.toml (import-linter, run by ``make test``) holds both rules.

- ``messages``: what travels on queues (a step to send, an auth-failure report).
- ``platform``: queue, events, mailer, cipher and sealer, the credential vault, secrets and run-once.
- ``mailbox``: a connected inbox at its provider: send, find in Sent, poll.
- ``signin``: OAuth sign-in and the custom-inbox login check, with what they can fail with.
"""
