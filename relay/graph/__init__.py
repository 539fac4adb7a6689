"""Microsoft Graph, the protocol: what the watcher and the mailbox layer share."""
