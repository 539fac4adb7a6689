"""What a Graph account's authenticationError / connectError events say (EmailEngine's keys)."""

from __future__ import annotations

import warnings

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kiota_abstractions.api_error import APIError
    from msgraph.generated.models.o_data_errors.main_error import MainError
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError

from relay.errors import AuthError, ConsentRequired
from relay.sources.graph.watcher import error_data


def _odata(status: int, code: str, message: str) -> ODataError:
    error = ODataError()
    error.error = MainError(code=code, message=message)
    error.response_status_code = status
    return error


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            _odata(403, "ErrorAccessDenied", "Access is denied."),
            {
                "response": "403 ErrorAccessDenied: Access is denied.",
                "serverResponseCode": "ErrorAccessDenied",
                "statusCode": 403,
            },
        ),
        (
            APIError(message="Service Unavailable", response_status_code=503),
            {
                "response": "503: Service Unavailable",
                "serverResponseCode": "HTTP503",
                "statusCode": 503,
            },
        ),
        (
            ConsentRequired("the grant was revoked"),
            {"response": "the grant was revoked", "serverResponseCode": "OauthRenewError"},
        ),
        (
            AuthError("no token stored"),
            {"response": "no token stored", "serverResponseCode": "NoCredentials"},
        ),
        (
            TimeoutError(),
            {"response": "TimeoutError", "serverResponseCode": "TimeoutError"},
        ),
    ],
)
def test_error_data_has_emailengines_keys(exc: BaseException, expected: dict[str, object]) -> None:
    """response and serverResponseCode as EmailEngine sends them; Graph's code when it has one."""
    assert error_data(exc) == expected
