"""The error the sandbox's identity platform answers with, shaped like Microsoft's.

Microsoft's token endpoint answers ``{error, error_description: "AADSTSnnnn: ...",
error_codes: [n], timestamp, trace_id, correlation_id}``; ``suberror`` is added for a few
``invalid_grant`` cases (``consent_required``). The authorize endpoint sends the same
``error`` and ``error_description`` back to the redirect URI when it can trust it, and shows
an error page when it cannot (unknown client, unregistered redirect URI).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RedirectTarget:
    """Where an authorize-endpoint error may be sent: the validated redirect URI."""

    redirect_uri: str
    state: str | None
    response_mode: str


class IdentityError(Exception):
    """A protocol error with Microsoft's error name and AADSTS code."""

    def __init__(
        self,
        error: str,
        code: int,
        text: str,
        *,
        status: int = 400,
        suberror: str | None = None,
        redirect: RedirectTarget | None = None,
    ) -> None:
        super().__init__(f"{error}: AADSTS{code}: {text}")
        self.error = error
        self.code = code
        self.text = text
        self.status = status
        self.suberror = suberror
        self.redirect = redirect

    @property
    def description(self) -> str:
        """``AADSTSnnnn: text``, the start of Microsoft's ``error_description``."""
        return f"AADSTS{self.code}: {self.text}"

    def redirected_to(self, target: RedirectTarget) -> IdentityError:
        """The same error, to be reported to ``target`` instead of on an error page."""
        return IdentityError(
            self.error,
            self.code,
            self.text,
            status=self.status,
            suberror=self.suberror,
            redirect=target,
        )
