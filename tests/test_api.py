"""The public surface: what ``import ittc`` gives, the error families, the options."""

from __future__ import annotations

import inspect
import logging
import subprocess
import sys

import cryptography.exceptions
import pytest

import ittc
from ittc import errors
from ittc.combiner import options


def test_import_ittc_is_light():
    """``import ittc`` loads neither gRPC nor the combiner; the names load on first use."""
    code = (
        "import sys, ittc\n"
        "assert 'grpc' not in sys.modules and 'ittc.combiner' not in sys.modules\n"
        "ittc.ClusterClient\n"
        "assert 'ittc.combiner' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_public_name_resolves():
    for name in ittc.__all__:
        assert getattr(ittc, name) is not None, name
    assert set(ittc.__all__) <= set(dir(ittc))
    with pytest.raises(AttributeError, match="no attribute 'ClusterClinet'"):
        ittc.ClusterClinet  # noqa: B018 - the misspelling is the point


def test_the_library_logs_through_a_null_handler():
    handlers = logging.getLogger("ittc").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


def test_every_error_is_an_ittc_error():
    classes = [
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if obj.__module__ == errors.__name__
    ]
    assert len(classes) > 20
    for cls in classes:
        assert issubclass(cls, errors.IttcError), cls
    # Families a caller already catches elsewhere.
    assert issubclass(errors.InvalidSignature, cryptography.exceptions.InvalidSignature)
    assert issubclass(errors.UnsupportedHash, cryptography.exceptions.UnsupportedAlgorithm)
    for cls in (errors.ParameterError, errors.EncodingError, errors.ConfigError):
        assert issubclass(cls, ValueError)
    for cls in (errors.NodeUnavailable, errors.NodeRefused, errors.NodeMisbehaved):
        assert issubclass(cls, errors.NodeError)


def test_signing_error_names_each_node_with_a_typed_error():
    nodes = {
        2: errors.NodeUnavailable(2, "UNAVAILABLE: connection refused", "UNAVAILABLE"),
        4: errors.NodeMisbehaved(4, "sent two different shares for one message"),
    }
    exc = errors.SigningError("fewer than k=3 nodes answered", nodes)
    assert exc.nodes[2].code == "UNAVAILABLE"
    assert isinstance(exc.nodes[4], errors.NodeMisbehaved)
    assert str(exc) == (
        "fewer than k=3 nodes answered (node 2: UNAVAILABLE: connection refused; "
        "node 4: sent two different shares for one message)"
    )


def test_both_clients_take_the_same_declared_options():
    options.check_options_match()
    for cls in (ittc.ClusterClient, ittc.SyncClusterClient):
        params = inspect.signature(cls.__init__).parameters
        assert "options" in params and params["options"].kind is inspect.Parameter.VAR_KEYWORD


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("deadline", 0, "deadline must be a finite number of seconds above 0"),
        ("deadline", float("nan"), "deadline must be"),
        ("node_timeout", -1, "node_timeout must be"),
        ("hedge_after", float("inf"), "hedge_after must be"),
        ("max_batch", 0, "max_batch must be an integer in 1..4096"),
        ("max_batch", True, "max_batch must be an integer"),
        ("mode", "some", "mode must be 'exact' or 'all'"),
        ("proofs", "never", "proofs must be 'on-failure' or 'always'"),
    ],
)
def test_bad_options_are_named(option, value, message):
    with pytest.raises(errors.ParameterError, match=message):
        options.Settings.from_options({option: value})


def test_unknown_option_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['deadlin'\]"):
        options.Settings.from_options({"deadlin": 5})


def _error_examples() -> list[errors.IttcError]:
    """One instance of every error class in ittc.errors, with attributes set."""
    node = errors.NodeMisbehaved(4, "sent two different shares", "INTERNAL")
    examples: list[errors.IttcError] = [
        errors.InvalidShare(3, "value is not a unit"),
        errors.InvalidShare(None, "too long"),
        errors.InvalidProof(2, "proof does not verify"),
        errors.NotEnoughShares(3, 2, {5: "proof does not verify"}),
        errors.SearchStopped(3, 7, {1: "suspect"}),
        errors.CombineError([1, 2, 4]),
        errors.NodeError(1, "gone", "UNAVAILABLE"),
        errors.NodeUnavailable(2, "UNAVAILABLE: connection refused", "UNAVAILABLE"),
        errors.NodeRefused(3, "stale request", "FAILED_PRECONDITION"),
        errors.NodeInOtherEpoch(2, "wrong epoch", 7),
        node,
        errors.SigningError("fewer than k=3 nodes answered", {4: node}),
        errors.CombinerClosed("closed", {}),
        errors.WireError("unknown hash 9"),
        errors.ReshareError("commitments", "wrong degree", holders=[2], members=[1, 3]),
        errors.EnvelopeError("site-a", "signature does not verify"),
        errors.Undecryptable("site-b", "does not open"),
        errors.ApprovalError("too few approvals", {"site-c": "expired"}),
    ]
    covered = {type(e) for e in examples}
    for _, cls in inspect.getmembers(errors, inspect.isclass):
        if cls.__module__ == errors.__name__ and cls not in covered:
            examples.append(cls("a message naming nothing secret"))
    return examples


def _same(a: BaseException, b: BaseException) -> None:
    assert type(a) is type(b)
    assert a.args == b.args and str(a) == str(b)
    assert {k: v for k, v in vars(a).items() if k != "nodes"} == {
        k: v for k, v in vars(b).items() if k != "nodes"
    }
    if isinstance(a, errors.SigningError):
        assert isinstance(b, errors.SigningError)
        assert a.nodes.keys() == b.nodes.keys()
        for i in a.nodes:
            _same(a.nodes[i], b.nodes[i])


def test_every_error_pickles_whole():
    """An error raised in a worker process crosses the pipe as itself (type, message,
    attributes); classes whose __init__ takes other parameters than their message too."""
    import pickle

    from ittc_node.audit import AuditChainBroken
    from ittc_node.certwatch import CertificateError

    examples = [
        *_error_examples(),
        AuditChainBroken("log: line 3: hash chain broken"),
        CertificateError("node.crt: expired"),
    ]
    assert len(examples) > 25
    for error in examples:
        _same(error, pickle.loads(pickle.dumps(error)))


def _raise(position: int) -> None:
    raise _error_examples()[position]


def test_errors_raised_in_a_worker_process_arrive_as_themselves():
    """What a node's worker process raises reaches the daemon as that error, not as a
    broken pool ("worker processes failed to start")."""
    import concurrent.futures
    import multiprocessing

    examples = _error_examples()
    with concurrent.futures.ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        for position, expected in enumerate(examples):
            with pytest.raises(type(expected)) as raised:
                pool.submit(_raise, position).result(timeout=60)
            _same(expected, raised.value)
