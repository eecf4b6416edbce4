"""The bearer token that guards inference (API_TOKEN), checked alike over REST and gRPC."""

import hmac


def bearer_matches(authorization: str, expected: str, encoding: str = "utf-8") -> bool:
    """Whether ``authorization`` is ``Bearer <expected>`` (the REST header, the gRPC metadata).

    RFC 7235 allows several spaces after the scheme. The comparison takes
    constant time: response timing must not reveal the token.
    """
    scheme, _, token = authorization.partition(" ")
    token = token.lstrip(" ").encode(encoding, "replace")
    return scheme.lower() == "bearer" and hmac.compare_digest(token, expected.encode())
