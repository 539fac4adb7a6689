"""A local emulator of the Microsoft Graph v1.0 mail subset the relay uses.

- :mod:`~relay.sandbox.graph.mail`: mailboxes, folders and messages (in memory).
- :mod:`~relay.sandbox.graph.mime`: MIME sources in (delivery, upload) and out (``$value``).
- :mod:`~relay.sandbox.graph.bodies`: HTML and text bodies, converted as Exchange does.
- :mod:`~relay.sandbox.graph.query`: ``$filter`` and ``$search`` on message lists.
- :mod:`~relay.sandbox.graph.delta`: delta query tokens and pages.
- :mod:`~relay.sandbox.graph.access`: what a token may do with a mailbox.
- :mod:`~relay.sandbox.graph.subscriptions`: change subscriptions and their rules.
- :mod:`~relay.sandbox.graph.notifier`: validation, batching, retries, slow endpoints.
- :mod:`~relay.sandbox.graph.throttling`: 429 on demand, and the requests each mailbox got.
- :mod:`~relay.sandbox.graph.routes`: the ``/v1.0/`` endpoints.
- :mod:`~relay.sandbox.graph.admin`: the admin API for mail and subscriptions.

Pointing msgraph-sdk at the sandbox (``ca_path`` is the sandbox's ``ca.pem``)::

    context = ssl.create_default_context(cafile=ca_path)  # blocking: use a thread
    transport = httpx.AsyncHTTPTransport(verify=context)
    http_client = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(transport=transport),
        options=msgraph.graph_request_adapter.options,  # keeps the /me rewrite
    )
    adapter = GraphRequestAdapter(auth_provider, client=http_client)
    adapter.base_url = f"{sandbox_url}/v1.0"  # no trailing slash
    client = GraphServiceClient(request_adapter=adapter)

``auth_provider`` is ``BaseBearerTokenAuthenticationProvider(<AccessTokenProvider>)`` or
``AzureIdentityAuthenticationProvider(credential, scopes=[...])`` (its default
``allowed_hosts`` of ``[]`` allows the sandbox's host; ``GraphServiceClient(credentials=)``
would allow Microsoft's hosts only). Close ``transport`` as well as ``http_client``:
msgraph-core's transport wrapper does not close the transport it wraps. msgraph's request
builders warn (``DeprecationWarning``) when first imported; import them at start-up.
"""
