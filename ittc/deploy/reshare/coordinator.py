"""The coordinator of a reshare: the operator's tool that carries a run between the sites.

It holds no secret and no credential that could start a run: it relays the plan and its
approvals (which every node checks itself), the holders' signed public values and their
sealed private values (ciphertexts it cannot open), the members' acknowledgements; it
runs every public check itself so that it can name a cheater, and settles complaints
(docs/lifecycle.md §7). What it writes — its run folder, its log — holds only public
values and ciphertexts.

A run, attempt by attempt (a failed attempt is retried with other holders under the same
approvals, up to the number of ways to choose them):

1. **Prepare** every participant (the ``k`` holders and every new member); each checks the
   approvals; holders answer with round 1.
2. **Deal**: each holder gets the commitments and the masks sealed to it; it answers with
   its contribution and sealed sub-shares, or a complaint.
3. **Accept**: each member gets every public value and its sub-shares; it stores its new
   share and acknowledges, or complains.
4. The acceptance test; then the **certificate** is written durably — the point of no
   return — and, beside the cluster file, the new epoch's parameters, the certificate and
   the new cluster file (a running combiner follows it, and hands the certificate to
   nodes that missed the commit).
5. **Commit** is delivered to every participant and to every old site leaving the cluster.

A convicted holder is left out of the next attempt; a convicted member ends the run (it
is in the plan: make a new plan without it). ``resume`` after a crash: with a
certificate, deliver it everywhere (forward); without one, abort everywhere (back): nodes
keep signing in the old epoch.

Run folder (``<cluster folder>/reshare/<plan digest, 16 hex>/``)::

    plan.json, approvals.json    what was approved
    old-nodes.json               the epoch the run starts from: sites, addresses, TLS names
    attempt-<n>.json             holders, nonce, run id; every public value and sealed
                                 ciphertext received; the outcome and who was blamed
    certificate.json             written before any Commit is sent
    outcome.json                 committed (and where), or aborted
    log.txt                      what happened, one line per event
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import pathlib
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from ittc.config import ClusterFile
from ittc.deploy.reshare.attempt import Attempt, AttemptRun
from ittc.deploy.reshare.folder import RunFolder, _write_json, new_cluster_file
from ittc.deploy.reshare.links import (
    RPC_TIMEOUT,
    ReshareFailed,
    Site,
    _crash,
    _Link,
    _SiteFailed,
)
from ittc.deploy.reshare.verdicts import Convicted
from ittc.errors import (
    ApprovalError,
    ConfigError,
    ParameterError,
)
from ittc.lifecycle import (
    Approval,
    Certificate,
    Plan,
    check_approvals,
    scheme_plan,
)
from ittc.lifecycle.plan import ATTEMPT_BYTES
from ittc.wire import tls
from ittc.wire.v1 import reshare_pb2 as rpb

__all__ = ["Coordinator"]

log = logging.getLogger("ittc.deploy.reshare")


def run_sites(cluster: ClusterFile, plan: Plan) -> dict[str, Site]:
    """Every site in the run: old sites (reached where the cluster file says) and new
    members (where the plan says)."""
    old_sites = cluster.sites()
    entries = {e.index: e for e in cluster.nodes}
    out: dict[str, Site] = {}
    new_index = {m.site.name: m for m in plan.members}
    for index, identity in old_sites.items():
        member = new_index.get(identity.name)
        if member is not None and member.site != identity:
            raise ConfigError(
                f"the plan gives site {identity.name} other keys than the cluster file"
            )
        entry = entries[index]
        out[identity.name] = Site(
            identity, entry.address, entry.tls_name, index, member.index if member else None
        )
    for member in plan.members:
        if member.site.name not in out:
            out[member.site.name] = Site(
                member.site, member.address, member.tls_name, None, member.index
            )
    return out


class Coordinator:
    """Runs one approved plan against a cluster. ``cluster`` is the cluster file of the
    epoch the plan starts from; ``say`` receives one line per event (the CLI prints them).
    """

    def __init__(
        self,
        cluster: ClusterFile,
        plan: Plan,
        approvals: Sequence[Approval],
        *,
        cert: pathlib.Path | None = None,
        key: pathlib.Path | None = None,
        timeout: float = RPC_TIMEOUT,
        clock: Callable[[], float] | None = None,
        say: Callable[[str], None] | None = None,
        folder: RunFolder | None = None,
    ) -> None:
        self.cluster = cluster
        self.plan = plan
        self.approvals = tuple(approvals)
        self.timeout = timeout
        self.clock = clock or time.time
        self._say = say
        self.folder = folder or RunFolder.of(cluster, plan)
        cert = cert or cluster.client_cert
        key = key or cluster.client_key
        if cert is None or key is None:
            raise ConfigError(
                f"{cluster.path}: no client identity to reach the nodes with "
                "(a certificate of the cluster CA; any identity: the plan authorizes the run)"
            )
        self._credentials = tls.client_credentials(cert, key, cluster.ca, now=self.clock())
        self._links: dict[str, _Link] = {}
        self.old = cluster.params
        self.sites = run_sites(cluster, plan)

    # -- who is who -------------------------------------------------------------------

    def _old_site(self, index: int) -> Site:
        return next(s for s in self.sites.values() if s.old_index == index)

    def _member_site(self, index: int) -> Site:
        return next(s for s in self.sites.values() if s.new_index == index)

    def _link(self, site: Site) -> _Link:
        if site.name not in self._links:
            self._links[site.name] = _Link(site, self._credentials)
        return self._links[site.name]

    async def close(self) -> None:
        for link in self._links.values():
            await link.channel.close()
        self._links = {}

    def say(self, line: str) -> None:
        self.folder.log(line)
        log.info("%s", line)
        if self._say is not None:
            self._say(line)

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> Certificate:
        """Carry the plan to a committed epoch; :class:`ReshareFailed` if it cannot."""
        try:
            self.plan.check_against(self.old)
            check_approvals(
                self.plan, self.approvals, self.cluster.sites(), self.old.k, now=self.clock()
            )
        except (ParameterError, ApprovalError, ConfigError) as exc:
            raise ReshareFailed(str(exc)) from None
        if self.folder.certificate() is not None:
            raise ReshareFailed(
                f"{self.folder.root} already holds a certificate for this plan: use --resume"
            )
        self.folder.start(self.cluster, self.plan, self.approvals)
        self.say(
            f"plan {self.plan.digest.hex()[:16]}: key {self.old.short_id} epoch "
            f"{self.old.epoch} ({self.old.k} of {self.old.n}) -> epoch {self.old.epoch + 1} "
            f"({self.plan.k} of {self.plan.n})"
        )
        try:
            await self._catch_up()
            certificate = await self._attempts()
            await self._finish(certificate)
            return certificate
        finally:
            await self.close()

    async def _catch_up(self) -> None:
        """Sites still in an epoch before this one (a commit did not reach them, or a site
        lost its state and started again from its first epoch) are handed the
        certificates since, in order, which the cluster folder keeps beside the cluster
        file, so they can take part."""
        path = self.cluster.certificate
        if path is None or not path.exists():
            return
        sites = [s for s in self.sites.values() if s.old_index is not None]
        statuses = await asyncio.gather(*(self._status(s) for s in sites), return_exceptions=True)
        behind = [
            (site, status.epoch)
            for site, status in zip(sites, statuses, strict=True)
            if isinstance(status, rpb.ReshareStatus) and status.epoch < self.old.epoch
        ]
        for site, epoch in behind:
            for e in range(epoch + 1, self.old.epoch + 1):
                chain = path if e == self.old.epoch else self.cluster.root / f"certificate-{e}.json"
                if not chain.exists():
                    self.say(f"{site.name} is in epoch {epoch}: no certificate of epoch {e} here")
                    break
                request = rpb.CommitRequest(certificate=chain.read_bytes())
                try:
                    await self._link(site).call("Commit", request, self.timeout)
                except _SiteFailed as exc:
                    self.say(f"{site.name} is in epoch {e - 1} and did not commit: {exc.reason}")
                    break
            else:
                self.say(
                    f"{site.name} was still in epoch {epoch}: handed it the certificates "
                    f"up to epoch {self.old.epoch}"
                )

    async def _attempts(self) -> Certificate:
        excluded: set[int] = set()
        blamed: list[str] = []
        tried: set[tuple[int, ...]] = set()
        failures: dict[str, int] = {}
        number = len(self.folder.attempts())
        while True:
            holders = await self._choose_holders(excluded, tried)
            if holders is None:
                raise ReshareFailed(
                    f"no {self.old.k} holders left to try (left out: {sorted(excluded)})", blamed
                )
            tried.add(holders)
            number += 1
            nonce = secrets.token_bytes(ATTEMPT_BYTES)
            attempt = Attempt(
                number, holders, nonce, scheme_plan(self.plan, self.old, holders, nonce)
            )
            attempt.record = {
                "attempt": number,
                "holders": list(holders),
                "nonce": nonce.hex(),
                "run_id": attempt.run_id.hex(),
            }
            self._save(attempt)
            self.say(f"attempt {number}: holders {list(holders)}, run {attempt.run_id.hex()[:16]}")
            try:
                return await AttemptRun(self, attempt).run()
            except _SiteFailed as exc:
                # Unavailable, or an answer that is not the site's: no verdict. A holder is
                # left out of the next attempt; a new member must take part, so the run
                # gives up when one fails twice.
                site = exc.site
                attempt.record["outcome"] = {"failed": exc.reason, "site": site.name}
                self.say(f"attempt {number} failed: {exc}")
                await self._abort(attempt)
                failures[site.name] = failures.get(site.name, 0) + 1
                if site.old_index in holders:
                    excluded.add(site.old_index)
                if site.new_index is not None and failures[site.name] >= 2:
                    raise ReshareFailed(
                        f"new member {site.name} cannot take part: {exc.reason}"
                    ) from None
            except Convicted as exc:
                names = [self._old_site(i).name for i in exc.holders]
                names += [self._member_site(j).name for j in exc.members]
                attempt.record["outcome"] = {
                    "reason": exc.reason,
                    "convicted_holders": list(exc.holders),
                    "convicted_members": list(exc.members),
                    "convicted_sites": names,
                }
                self.say(
                    f"attempt {number}: {exc.reason}; at fault: {', '.join(names) or 'nobody'}"
                )
                await self._abort(attempt)
                blamed.extend(n for n in names if n not in blamed)
                if exc.members:
                    raise ReshareFailed(
                        f"a new member cheated ({exc.reason}); make a new plan without it",
                        blamed,
                    ) from None
                excluded.update(exc.holders)
            finally:
                self._save(attempt)

    async def _choose_holders(
        self, excluded: set[int], tried: set[tuple[int, ...]]
    ) -> tuple[int, ...] | None:
        """The first ``k`` old sites (by index) that answer Status at the old epoch and are
        not excluded, in a combination not tried yet."""
        candidates = [i for i in range(1, self.old.n + 1) if i not in excluded]
        statuses = await asyncio.gather(
            *(self._status(self._old_site(i)) for i in candidates), return_exceptions=True
        )
        ready = [
            i
            for i, status in zip(candidates, statuses, strict=True)
            if isinstance(status, rpb.ReshareStatus)
            and status.epoch_id == self.old.epoch_id
            and status.index == i
        ]
        for combination in itertools.combinations(ready, self.old.k):
            if combination not in tried:
                return combination
        return None

    async def _status(self, site: Site) -> rpb.ReshareStatus:
        result: rpb.ReshareStatus = await self._link(site).call(
            "Status", rpb.StatusRequest(), min(self.timeout, 10.0)
        )
        return result

    def _save(self, attempt: Attempt) -> None:
        _write_json(self.folder.root / f"attempt-{attempt.number}.json", attempt.record)

    async def _abort(self, attempt: Attempt) -> None:
        """Tell every participant to forget the attempt (best effort)."""
        request = rpb.AbortRequest(run_id=attempt.run_id, attempt=attempt.nonce)
        targets = [s for s in self.sites.values() if s.old_index in attempt.holders or s.new_index]
        await asyncio.gather(
            *(self._link(s).call("Abort", request, 10.0) for s in targets), return_exceptions=True
        )

    # -- after the certificate -----------------------------------------------------------

    async def _finish(self, certificate: Certificate) -> None:
        """Publish the new cluster file, then deliver the certificate everywhere."""
        path = new_cluster_file(self.cluster, certificate)
        self.say(f"new cluster file {path} (epoch {certificate.epoch})")
        _crash("published")
        committed, missing = await self.deliver(certificate)
        _write_json(
            self.folder.root / "outcome.json",
            {
                "committed": True,
                "epoch": certificate.epoch,
                "epoch_id": certificate.params.epoch_id,
                "certificate": certificate.digest.hex(),
                "delivered": sorted(committed),
                "not_delivered": {k: v for k, v in sorted(missing.items())},
            },
        )
        if missing:
            self.say(
                "not committed yet at: "
                + "; ".join(f"{k}: {v}" for k, v in sorted(missing.items()))
                + " (run again with --resume, or any combiner with the new cluster file "
                "will hand them the certificate)"
            )
        else:
            self.say(f"epoch {certificate.epoch} committed at every site")

    async def deliver(self, certificate: Certificate) -> tuple[list[str], dict[str, str]]:
        """Commit at every site of the old epoch and every new member. Returns the sites
        that committed (or retired) and why the others did not."""
        request = rpb.CommitRequest(certificate=certificate.to_json().encode("ascii"))
        sites = list(self.sites.values())

        async def commit(site: Site) -> Any:
            result = await self._link(site).call("Commit", request, self.timeout)
            _crash("delivered")  # after the first site committed
            return result

        results = await asyncio.gather(*(commit(s) for s in sites), return_exceptions=True)
        done, missing = [], {}
        for site, result in zip(sites, results, strict=True):
            if isinstance(result, rpb.CommitResponse):
                done.append(site.name)
            else:
                missing[site.name] = getattr(result, "reason", str(result))
        return done, missing

    # -- resume --------------------------------------------------------------------------

    async def resume(self) -> Certificate | None:
        """After a crash: deliver the certificate if it was written (and publish the new
        cluster file), else abort every attempt at every site. Returns the certificate,
        or None when the run was rolled back."""
        if not self.folder.root.is_dir():
            raise ReshareFailed(
                f"no run of plan {self.plan.digest.hex()[:16]} in {self.folder.root.parent}: "
                "nothing to resume (without --resume, the plan's run starts)"
            )
        try:
            certificate = self.folder.certificate()
            if certificate is not None:
                self.say(
                    f"resuming: certificate {certificate.digest.hex()[:16]} exists, committing"
                )
                await self._finish(certificate)
                return certificate
            attempts = self.folder.attempts()
            self.say(f"resuming: no certificate, aborting {len(attempts)} attempt(s)")
            for record in attempts:
                request = rpb.AbortRequest(
                    run_id=bytes.fromhex(record["run_id"]), attempt=bytes.fromhex(record["nonce"])
                )
                await asyncio.gather(
                    *(self._link(s).call("Abort", request, 10.0) for s in self.sites.values()),
                    return_exceptions=True,
                )
            self.folder.create()
            _write_json(self.folder.root / "outcome.json", {"committed": False, "aborted": True})
            self.say(f"rolled back: the cluster stays at epoch {self.old.epoch}")
            return None
        finally:
            await self.close()
