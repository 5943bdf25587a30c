"""The certificate authority's side: a ``cryptography`` RSA private key that signs through
the cluster, and the CA operations (self-signed root, issue, CRL, OCSP) built on it."""

from ittc.ca.key import OperationRefused, ThresholdRSAPrivateKey, sign_item_for
from ittc.ca.operations import CAError, crl, issue, ocsp_response, selfsign, signing_padding

__all__ = [
    "CAError",
    "OperationRefused",
    "ThresholdRSAPrivateKey",
    "crl",
    "issue",
    "ocsp_response",
    "selfsign",
    "sign_item_for",
    "signing_padding",
]
