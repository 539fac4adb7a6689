"""mailrelay: Microsoft 365 mailboxes (own and shared) to signed webhooks."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mailrelay")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
