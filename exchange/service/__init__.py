"""exchange.service: the server's operations, with authorisation and audit, and no HTTP.

Each operation runs through :meth:`exchange.service.core.Service.perform`, which
authenticates the signed request, runs the operation and appends its audit
entry in one transaction, and logs every refusal as a ``denied`` entry.
"""
