"""The exponentiation backends of ``ittc.scheme.ct``: same answers as gmpy2, or not used.

libcrypto's answers are compared with gmpy2's for edge and random inputs at every
modulus size users run; a missing library and one that answers wrongly (at start, or
only at a key's modulus) are simulated and must never be used; many threads at once get
the right answers. ``--ct-backend`` (or ``ITTC_CT_BACKEND``) runs the rest of the suite
under one backend or the other.
"""

from __future__ import annotations

import logging
import random
import threading

import gmpy2
import pytest

from ittc.errors import BackendError, IttcError, ParameterError
from ittc.scheme import _libcrypto, ct
from ittc.scheme.ct import mpz
from ittc.scheme.keyshare import KeyShare
from ittc.scheme.proofs import L1

SIZES = (512, 1024, 1536, 2048, 3072, 4096)
MISSING = "/nonexistent/ittc-test/libcrypto.so.3"


@pytest.fixture
def restore_backend(monkeypatch):
    """Whatever a test does to the backend choice is undone after it."""
    monkeypatch.setattr(ct, "_libraries", dict(ct._libraries))
    monkeypatch.setattr(ct, "_active", ct._active)
    monkeypatch.setattr(ct, "_requested", ct._requested)
    monkeypatch.setattr(ct, "_loader", ct._loader)


@pytest.fixture(scope="module")
def lib():
    """A libcrypto of this test's own (not the one ct uses), or a failure saying why."""
    try:
        return _libcrypto.load()
    except (OSError, AttributeError) as exc:
        pytest.fail(f"these tests need the system's libcrypto (OpenSSL >= 1.1.0): {exc}")


def _modulus(rng: random.Random, bits: int) -> mpz:
    return mpz(rng.getrandbits(bits) | 1 << (bits - 1) | 1)


def _cases(bits: int) -> list[tuple[str, mpz, mpz, mpz]]:
    """Edge and random inputs at ``bits``: the sizes of a share and of a proof nonce."""
    rng = random.Random(f"ct cases {bits}")
    n = _modulus(rng, bits)
    share_exponent = mpz(rng.getrandbits(bits + 7) | 1 << (bits + 6))  # 2Δ·s_i, n = 5
    nonce = mpz(rng.getrandbits(bits + 2 * L1) | 1 << (bits + 2 * L1 - 1))
    x = mpz(rng.randrange(2, n - 1))
    cases = []
    for base_name, base in (("0", mpz(0)), ("1", mpz(1)), ("N-1", n - 1), ("x", x)):
        for exp_name, exponent in (("1", mpz(1)), ("share", share_exponent), ("nonce", nonce)):
            cases.append((f"base {base_name}, exponent {exp_name}", base, exponent, n))
    cases.append(("exponent 2^bits - 1", x, mpz(2) ** bits - 1, n))
    cases.append(("exponent 2^64", x, mpz(2) ** 64, n))
    cases.append(("base above N", n + x, share_exponent, n))
    cases.append(("random", mpz(rng.randrange(n)), mpz(rng.getrandbits(bits)) | 1, n))
    return cases


@pytest.mark.parametrize("bits", SIZES)
def test_libcrypto_answers_as_gmpy2_at_every_size(lib, bits):
    for name, base, exponent, n in _cases(bits):
        expected = gmpy2.powmod_sec(base, exponent, n)
        assert lib.powmod_secret(base, exponent, n) == expected, name
        assert lib.powmod_public(base, exponent, n) == expected, name


@pytest.mark.parametrize("name", ["openssl", "gmpy2"])
def test_api_under_each_backend(restore_backend, name):
    assert ct.use_backend(name) == name and ct.backend() == name
    rng = random.Random(f"api {name}")
    for bits in (512, 1024):
        n = gmpy2.next_prime(_modulus(rng, bits))  # every base but 0 mod n inverts
        for _ in range(20):
            base = mpz(rng.randrange(-n, 2 * n))
            exponent = mpz(rng.getrandbits(rng.choice((1, 63, 64, 65, bits, bits + 600))) | 1)
            assert ct.powmod_secret(base, exponent, n) == gmpy2.powmod_sec(base, exponent, n)
            assert ct.powmod_public(base, exponent, n) == gmpy2.powmod(base, exponent, n)
            if base % n:
                assert ct.powmod_public(base, -exponent, n) == gmpy2.powmod(base, -exponent, n)
        assert ct.powmod_public(mpz(5), 0, n) == 1
    assert ct.powmod_public(mpz(3), 2**70 + 1, mpz(2**61)) == pow(3, 2**70 + 1, 2**61)


@pytest.mark.parametrize("name", ["openssl", "gmpy2"])
def test_bad_inputs_are_typed_errors_under_each_backend(restore_backend, name):
    ct.use_backend(name)
    n = mpz(2**127 - 1)
    for base, exponent, modulus in (
        (3, 0, n),
        (3, -5, n),
        (3, 5, n + 1),
        (3, 5, 1),
        (3, 5, -n),
        (3, 2**100, 2**128),
    ):
        with pytest.raises(ParameterError):
            ct.powmod_secret(mpz(base), mpz(exponent), mpz(modulus))
    with pytest.raises(ValueError, match="not invertible"):
        ct.powmod_public(mpz(3), -(2**100), mpz(3 * 5))
    with pytest.raises(ValueError, match="not invertible"):
        ct.powmod_public(mpz(3), -5, mpz(3 * 5))


def test_unknown_backend_name_is_refused(restore_backend):
    before = ct.backend()
    with pytest.raises(ParameterError, match="unknown exponentiation backend"):
        ct.use_backend("openssl-fast")
    assert ct.backend() == before


def test_secret_exponent_is_flagged_consttime_and_cleared(lib):
    """The exponent BIGNUM gets BN_FLG_CONSTTIME, goes to the constant-time function, and
    is zeroed and freed right after it."""
    raw = lib._lib
    calls: dict[str, list] = {"flags": [], "clear": [], "bn": [], "consttime": [], "vartime": []}

    def spy(name, record):
        real = getattr(raw, name)

        def wrapper(*args):
            result = real(*args)
            record(args, result)
            return result

        monkey.setattr(raw, name, wrapper)

    with pytest.MonkeyPatch.context() as monkey:
        spy("BN_bin2bn", lambda a, r: calls["bn"].append((bytes(a[0]), r)))
        spy("BN_set_flags", lambda a, r: calls["flags"].append(a))
        spy("BN_clear_free", lambda a, r: calls["clear"].append(a[0]))
        spy("BN_mod_exp_mont_consttime", lambda a, r: calls["consttime"].append(a))
        spy("BN_mod_exp_mont", lambda a, r: calls["vartime"].append(a))
        n = mpz(2**521 - 1)
        exponent = mpz(0xC0FFEE) << 300 | 0xBEEF
        lib.powmod_secret(mpz(7), exponent, n)
        secret_bytes = int(exponent).to_bytes((exponent.bit_length() + 7) // 8, "big")
        exponent_bn = [ptr for data, ptr in calls["bn"] if data == secret_bytes]
        assert len(exponent_bn) == 1
        assert calls["flags"] == [(exponent_bn[0], 0x04)]
        ((rr, a, p, m, ctx, mont),) = calls["consttime"]
        assert p == exponent_bn[0] and not calls["vartime"]
        assert calls["clear"] == [exponent_bn[0]]  # zeroed and freed after the call

        calls["flags"].clear()
        lib.powmod_public(mpz(7), exponent, n)
        assert not calls["flags"] and len(calls["vartime"]) == 1


def test_each_thread_has_its_own_bn_ctx(lib):
    """Threads share the Montgomery context, never a BN_CTX or the result's BIGNUM; a
    thread reuses its own from call to call."""
    raw = lib._lib
    seen: list[tuple[str, int, int, int]] = []
    real = raw.BN_mod_exp_mont_consttime

    def spy(rr, a, p, m, ctx, mont):
        seen.append((threading.current_thread().name, ctx, rr, mont))
        return real(rr, a, p, m, ctx, mont)

    n = mpz(2**607 - 1)
    together = threading.Barrier(3)  # all three alive at once: no address is reused
    with pytest.MonkeyPatch.context() as monkey:
        monkey.setattr(raw, "BN_mod_exp_mont_consttime", spy)

        def work():
            for e in range(3, 9):
                assert lib.powmod_secret(mpz(5), mpz(e), n) == pow(5, e, int(n))
            together.wait()

        threads = [threading.Thread(target=work, name=f"t{i}") for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    scratch = {
        name: {(ctx, rr) for other, ctx, rr, _ in seen if other == name} for name, *_ in seen
    }
    assert len(scratch) == 3 and all(len(v) == 1 for v in scratch.values())
    ctxs = [ctx for v in scratch.values() for ctx, _ in v]
    results = [rr for v in scratch.values() for _, rr in v]
    assert len(set(ctxs)) == 3 and len(set(results)) == 3
    assert len({mont for *_, mont in seen}) == 1


def test_montgomery_contexts_are_cached_per_modulus_and_bounded():
    lib = _libcrypto.load()
    rng = random.Random("cache")
    n = _modulus(rng, 512)
    first = lib._modulus(n)
    assert lib._modulus(mpz(int(n))) is first and lib.cached_moduli() == 1
    others = [_modulus(rng, 512) for _ in range(3 * _libcrypto._CACHE_SIZE)]
    for m in others:
        assert lib.powmod_secret(mpz(3), mpz(65537), m) == gmpy2.powmod(3, 65537, m)
    assert lib.cached_moduli() == _libcrypto._CACHE_SIZE
    assert lib._modulus(n) is not first  # evicted, rebuilt
    # The evicted context is still usable by whoever held it.
    assert first.mont and first.size == 64


def test_many_threads_at_once_get_the_right_answers(restore_backend):
    """Threads share the Montgomery contexts (more moduli than the cache holds, so
    contexts are evicted under running calls) and each get exactly their own answers."""
    ct.use_backend("openssl")
    rng = random.Random("threads")
    moduli = [_modulus(rng, rng.choice((512, 1024))) for _ in range(_libcrypto._CACHE_SIZE + 4)]
    work = [
        (mpz(rng.getrandbits(1000)), mpz(rng.getrandbits(1100) | 1), rng.choice(moduli))
        for _ in range(600)
    ]
    expected = [gmpy2.powmod(b, e, n) for b, e, n in work]
    results: list[list[tuple[int, mpz]]] = [[] for _ in range(12)]
    errors: list[BaseException] = []
    start = threading.Barrier(12)

    def run(slot: int) -> None:
        try:
            ct.release_gil()
            start.wait()
            for i in range(slot, len(work), 12):
                b, e, n = work[i]
                results[slot].append((i, ct.powmod_secret(b, e, n)))
                results[slot].append((i, ct.powmod_public(b, e, n)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    got = [item for slot in results for item in slot]
    assert len(got) == 2 * len(work)
    for i, value in got:
        assert value == expected[i], i


# -- a missing or wrong libcrypto is never used ------------------------------------------


def test_missing_libcrypto_auto_falls_back_to_gmpy2_and_says_so(restore_backend, caplog):
    ct.use_backend("gmpy2")
    with caplog.at_level(logging.INFO, logger="ittc.scheme.ct"):
        assert ct.use_backend("auto", libcrypto=MISSING) == "gmpy2"
        assert ct.use_backend("auto", libcrypto=MISSING) == "gmpy2"
    assert ct.backend() == "gmpy2"
    notes = [r.getMessage() for r in caplog.records if "libcrypto not used" in r.getMessage()]
    assert len(notes) == 0  # it was gmpy2 already: nothing changed, nothing logged
    ct.use_backend("openssl")
    with caplog.at_level(logging.INFO, logger="ittc.scheme.ct"):
        assert ct.use_backend("auto", libcrypto=MISSING) == "gmpy2"
        assert ct.use_backend("auto", libcrypto=MISSING) == "gmpy2"
    notes = [r.getMessage() for r in caplog.records if "libcrypto not used" in r.getMessage()]
    assert len(notes) == 1 and "cannot load libcrypto" in notes[0]
    assert ct.powmod_secret(mpz(3), mpz(10**40), mpz(10**41 + 1)) == pow(3, 10**40, 10**41 + 1)


def test_missing_libcrypto_by_name_is_a_typed_error(restore_backend):
    before = ct.backend()
    with pytest.raises(BackendError, match="cannot load libcrypto") as info:
        ct.use_backend("openssl", libcrypto=MISSING)
    assert isinstance(info.value, IttcError)
    assert ct.backend() == before


def test_no_system_libcrypto_at_all(restore_backend, monkeypatch):
    """The default search finding nothing (as on a host without OpenSSL)."""
    monkeypatch.setattr(ct, "_libraries", {})

    def nothing(path):
        raise OSError("no libcrypto found")

    monkeypatch.setattr(ct, "_loader", nothing)
    monkeypatch.setattr(ct, "_active", None)
    assert ct.backend() == "gmpy2"  # the first use resolves "auto"
    with pytest.raises(BackendError):
        ct.use_backend("openssl")


class WrongBackend:
    """Real libcrypto, except a wrong secret answer when ``wrong(modulus)`` says so."""

    name = "openssl"
    description = "deliberately wrong test backend"

    def __init__(self, real, wrong):
        self.real, self.wrong, self.calls = real, wrong, 0

    def powmod_secret(self, base, exponent, modulus):
        self.calls += 1
        value = self.real.powmod_secret(base, exponent, modulus)
        return (value + 1) % modulus if self.wrong(modulus) else value

    def powmod_public(self, base, exponent, modulus):
        return self.real.powmod_public(base, exponent, modulus)


def _inject(monkeypatch, lib, wrong) -> WrongBackend:
    backend = WrongBackend(lib, wrong)
    monkeypatch.setattr(ct, "_libraries", {})
    monkeypatch.setattr(ct, "_loader", lambda path: backend)
    return backend


def test_libcrypto_failing_its_known_answer_test_is_never_used(
    restore_backend, monkeypatch, lib, caplog
):
    wrong = _inject(monkeypatch, lib, lambda m: m.bit_length() == 1024)
    with caplog.at_level(logging.WARNING, logger="ittc.scheme.ct"):
        assert ct.use_backend("auto") == "gmpy2"
    assert any("failed its known-answer test" in r.getMessage() for r in caplog.records)
    with pytest.raises(BackendError, match="known-answer test"):
        ct.use_backend("openssl")
    used = wrong.calls
    n = mpz(2**1023 + 1155)  # odd, 1024 bits: where the backend lies
    assert ct.powmod_secret(mpz(5), mpz(2**700 + 1), n) == gmpy2.powmod(5, 2**700 + 1, n)
    assert wrong.calls == used  # never asked again


def test_libcrypto_raising_in_its_known_answer_test_is_never_used(
    restore_backend, monkeypatch, lib
):
    class Raising(WrongBackend):
        def powmod_secret(self, base, exponent, modulus):
            raise ArithmeticError("libcrypto exponentiation failed")

    monkeypatch.setattr(ct, "_libraries", {})
    monkeypatch.setattr(ct, "_loader", lambda path: Raising(lib, lambda m: False))
    assert ct.use_backend("auto") == "gmpy2"
    with pytest.raises(BackendError, match="ArithmeticError"):
        ct.use_backend("openssl")


def test_wrong_only_at_the_keys_modulus_auto_switches_to_gmpy2(
    restore_backend, monkeypatch, lib, vkey, caplog
):
    """Passes the fixed known answers, lies at the key's modulus: the node's start-up
    self-test catches it and everything after uses gmpy2."""
    N = vkey.params.N
    wrong = _inject(monkeypatch, lib, lambda m: m == N)
    assert ct.use_backend("auto") == "openssl"
    share = vkey.shares[0]
    bad = share.signature_share(vkey.params.modulus - 2)
    with caplog.at_level(logging.ERROR, logger="ittc.scheme.ct"):
        share.self_test()  # switches, then passes on gmpy2
    assert ct.backend() == "gmpy2"
    assert any("gave a wrong answer" in r.getMessage() for r in caplog.records)
    good = share.signature_share(vkey.params.modulus - 2)
    assert good.value != bad.value
    assert good.value == gmpy2.powmod_sec(
        vkey.params.modulus - 2, 2 * vkey.params.delta * share.dangerously_export_secret(), N
    )
    calls = wrong.calls
    ct.use_backend("auto")  # once caught, never chosen again by this process
    assert ct.backend() == "gmpy2"
    share.signature_share(vkey.params.modulus - 2)
    assert wrong.calls == calls


def test_wrong_only_at_the_keys_modulus_by_name_fails_the_self_test(
    restore_backend, monkeypatch, lib, vkey
):
    N = vkey.params.N
    _inject(monkeypatch, lib, lambda m: m == N)
    assert ct.use_backend("openssl") == "openssl"
    with pytest.raises(BackendError, match="wrong answers"):
        vkey.shares[0].self_test()
    assert ct.backend() == "gmpy2"  # not used again, even by a caller that carries on


def test_self_test_passes_under_each_backend(restore_backend, vkey):
    for name in ("openssl", "gmpy2"):
        ct.use_backend(name)
        vkey.shares[1].self_test()
        assert ct.backend() == name


def test_a_new_keyshare_signs_identically_under_both_backends(restore_backend, vkey):
    share: KeyShare = vkey.shares[2]
    x = vkey.params.modulus // 3
    values = []
    for name in ("openssl", "gmpy2"):
        ct.use_backend(name)
        values.append(share.signature_share(x).value)
    assert values[0] == values[1]
