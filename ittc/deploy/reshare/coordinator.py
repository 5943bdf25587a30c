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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ittc.config import ClusterFile
from ittc.deploy.reshare.folder import RunFolder, _write_json, new_cluster_file
from ittc.deploy.reshare.links import (
    RPC_TIMEOUT,
    ReshareFailed,
    Site,
    _crash,
    _Link,
    _SiteFailed,
)
from ittc.errors import (
    ApprovalError,
    CertificateError,
    ConfigError,
    EnvelopeError,
    ParameterError,
    ReshareError,
    WireError,
)
from ittc.lifecycle import (
    ACK,
    Approval,
    Certificate,
    Plan,
    Sealed,
    Statement,
    check_approvals,
    judge,
    scheme_plan,
    verify_evidence,
)
from ittc.lifecycle.codec import (
    COMMITMENTS,
    COMPLAINT,
    CONTRIBUTION,
    Complaint,
    decode_acknowledgement,
    decode_dealt,
    decode_mask_commitments,
)
from ittc.lifecycle.plan import ATTEMPT_BYTES
from ittc.scheme.reshare import (
    MaskCommitment,
    Outcome,
    PrivateValue,
    ResharePlan,
    check_acceptance,
    judge_mask_complaint,
    judge_sub_share_complaint,
    mask_table,
    verify_contributions,
)
from ittc.storage.files import write_file_atomically
from ittc.wire import codec, tls
from ittc.wire.v1 import reshare_pb2 as rpb

__all__ = ["Coordinator"]

log = logging.getLogger("ittc.deploy.reshare")


class _Convicted(Exception):
    """Evidence convicts these holders (old indices) and members (new indices), or nobody;
    the attempt ends."""

    def __init__(
        self, reason: str, holders: Iterable[int] = (), members: Iterable[int] = ()
    ) -> None:
        super().__init__(reason)
        self.holders = tuple(sorted(set(holders)))
        self.members = tuple(sorted(set(members)))
        self.reason = reason


# -- the coordinator ---------------------------------------------------------------------


@dataclass
class _Attempt:
    number: int
    holders: tuple[int, ...]
    nonce: bytes
    sp: ResharePlan
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def run_id(self) -> bytes:
        return self.sp.run_id


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
        self.sites = self._sites()

    # -- who is who -------------------------------------------------------------------

    def _sites(self) -> dict[str, Site]:
        """Every site in the run: old sites (reached where the cluster file says) and new
        members (where the plan says)."""
        old_sites = self.cluster.sites()
        entries = {e.index: e for e in self.cluster.nodes}
        out: dict[str, Site] = {}
        new_index = {m.site.name: m for m in self.plan.members}
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
        for member in self.plan.members:
            if member.site.name not in out:
                out[member.site.name] = Site(
                    member.site, member.address, member.tls_name, None, member.index
                )
        return out

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

    def _start_folder(self) -> None:
        self.folder.create()
        _write_json(self.folder.root / "plan.json", self.plan.to_dict())
        _write_json(self.folder.root / "approvals.json", [a.to_dict() for a in self.approvals])
        _write_json(
            self.folder.root / "old-nodes.json",
            {
                "params": self.old.to_dict(),
                "nodes": [
                    {
                        "index": e.index,
                        "address": e.address,
                        "tls_name": e.tls_name,
                        **(e.site.to_dict() if e.site is not None else {}),
                    }
                    for e in self.cluster.nodes
                ],
            },
        )

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
        self._start_folder()
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
        """Sites still in the epoch before this one (the last commit did not reach them)
        are handed its certificate, which the cluster file names, so they can take part."""
        path = self.cluster.certificate
        if path is None or not path.exists():
            return
        sites = [s for s in self.sites.values() if s.old_index is not None]
        statuses = await asyncio.gather(*(self._status(s) for s in sites), return_exceptions=True)
        behind = [
            site
            for site, status in zip(sites, statuses, strict=True)
            if isinstance(status, rpb.ReshareStatus) and status.epoch < self.old.epoch
        ]
        if not behind:
            return
        request = rpb.CommitRequest(certificate=path.read_bytes())
        for site in behind:
            try:
                await self._link(site).call("Commit", request, self.timeout)
                self.say(
                    f"{site.name} was still in the epoch before: handed it epoch "
                    f"{self.old.epoch}'s certificate"
                )
            except _SiteFailed as exc:
                self.say(f"{site.name} is in an older epoch and did not commit: {exc.reason}")

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
            attempt = _Attempt(
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
                return await self._attempt(attempt)
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
            except _Convicted as exc:
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

    def _save(self, attempt: _Attempt) -> None:
        _write_json(self.folder.root / f"attempt-{attempt.number}.json", attempt.record)

    async def _gather(self, calls: Mapping[Site, Any]) -> dict[Site, Any]:
        """Run the calls at once; the first failure (after all finished) is raised."""
        sites = list(calls)
        results = await asyncio.gather(*calls.values(), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, _SiteFailed):
                raise result
        for result in results:
            if isinstance(result, _SiteFailed):
                raise result
        return dict(zip(sites, results, strict=True))

    async def _attempt(self, attempt: _Attempt) -> Certificate:
        sp, plan = attempt.sp, self.plan
        holders = {i: self._old_site(i) for i in attempt.holders}
        members = {j: self._member_site(j) for j in range(1, plan.n + 1)}
        participants = {s.name: s for s in [*holders.values(), *members.values()]}

        # 1. Prepare: every participant checks the approvals; holders make round 1.
        prepare = rpb.PrepareRequest(
            plan=plan.canonical(),
            approvals=codec.approvals_to_wire(self.approvals),
            holders=list(attempt.holders),
            attempt=attempt.nonce,
        )
        answers = await self._gather(
            {s: self._link(s).call("Prepare", prepare, self.timeout) for s in participants.values()}
        )
        for site, answer in answers.items():
            if answer.run_id != attempt.run_id:
                raise _SiteFailed(site, "Prepare: answered for another run id")
        commitment_statements: dict[int, Statement] = {}
        masks: list[Sealed] = []
        for i, site in holders.items():
            answer = answers[site]
            try:
                commitment_statements[i] = codec.statement_from_wire(answer.commitments)
                masks.extend(codec.sealed_list_from_wire(answer.masks))
            except WireError as exc:
                raise _SiteFailed(site, f"Prepare: malformed round 1: {exc.reason}") from None
        commitments = self._check_commitments(sp, holders, commitment_statements)
        attempt.record["commitments"] = [s.to_dict() for s in commitment_statements.values()]
        attempt.record["masks"] = [m.to_dict() for m in masks]
        self._save(attempt)
        self.say(f"attempt {attempt.number}: round 1 from holders {list(holders)}")
        _crash("prepared")

        # 2. Deal: each holder gets every commitment and the masks sealed to it.
        statements = [codec.statement_to_wire(s) for s in commitment_statements.values()]
        deals = await self._gather(
            {
                site: self._link(site).call(
                    "Deal",
                    rpb.DealRequest(
                        run_id=attempt.run_id,
                        commitments=statements,
                        masks=[codec.sealed_to_wire(m) for m in masks if m.recipient == site.name],
                    ),
                    self.timeout,
                )
                for site in holders.values()
            }
        )
        contribution_statements: dict[int, Statement] = {}
        sub_shares: list[Sealed] = []
        for i, site in holders.items():
            answer = deals[site]
            if answer.HasField("complaint"):
                await self._judge(attempt, site, answer.complaint, commitments, None)
            try:
                contribution_statements[i] = codec.statement_from_wire(answer.contribution)
                sub_shares.extend(codec.sealed_list_from_wire(answer.sub_shares))
            except WireError as exc:
                raise _SiteFailed(site, f"Deal: malformed answer: {exc.reason}") from None
        outcome = self._check_contributions(sp, holders, contribution_statements, commitments)
        attempt.record["contributions"] = [s.to_dict() for s in contribution_statements.values()]
        attempt.record["sub_shares"] = [s.to_dict() for s in sub_shares]
        attempt.record["new_epoch_id"] = outcome.params.epoch_id
        self._save(attempt)
        self.say(
            f"attempt {attempt.number}: contributions check out; new epoch id "
            f"{outcome.params.epoch_id[:16]}"
        )
        _crash("dealt")

        # 3. Accept: each member checks everything, stores its share and acknowledges.
        contributions = [codec.statement_to_wire(s) for s in contribution_statements.values()]
        accepts = await self._gather(
            {
                site: self._link(site).call(
                    "Accept",
                    rpb.AcceptRequest(
                        run_id=attempt.run_id,
                        commitments=statements,
                        contributions=contributions,
                        sub_shares=[
                            codec.sealed_to_wire(s) for s in sub_shares if s.recipient == site.name
                        ],
                    ),
                    self.timeout,
                )
                for site in members.values()
            }
        )
        acks: list[Statement] = []
        for site in members.values():
            answer = accepts[site]
            if answer.HasField("complaint"):
                await self._judge(attempt, site, answer.complaint, commitments, outcome)
            try:
                acks.append(codec.statement_from_wire(answer.ack))
            except WireError as exc:
                raise _SiteFailed(
                    site, f"Accept: malformed acknowledgement: {exc.reason}"
                ) from None
        shares = self._check_acks(outcome, members, acks)
        attempt.record["acks"] = [a.to_dict() for a in acks]
        self._save(attempt)
        _crash("acknowledged")
        try:
            check_acceptance(outcome, shares)
        except ReshareError as exc:
            raise _Convicted(str(exc), members=exc.members) from None
        self.say(f"attempt {attempt.number}: every member stored its share; acceptance test passed")

        # 4. The certificate: checked as a node will check it, then written durably.
        certificate = Certificate(
            plan, self.approvals, attempt.holders, attempt.nonce, outcome.params, tuple(acks)
        )
        try:
            certificate.verify(self.old, self.cluster.sites())
        except CertificateError as exc:  # pragma: no cover - every part was checked above
            raise ReshareFailed(f"the certificate does not verify: {exc}") from None
        write_file_atomically(
            self.folder.certificate_path, certificate.to_json().encode("ascii"), mode=0o644
        )
        attempt.record["outcome"] = {"certificate": certificate.digest.hex()}
        _crash("certificate")
        self.say(
            f"certificate {certificate.digest.hex()[:16]} written: "
            f"epoch {outcome.params.epoch} is decided"
        )
        return certificate

    # -- checks and verdicts -----------------------------------------------------------

    def _check_commitments(
        self, sp: ResharePlan, holders: Mapping[int, Site], statements: Mapping[int, Statement]
    ) -> list[MaskCommitment]:
        out: list[MaskCommitment] = []
        for i, statement in statements.items():
            site = holders[i]
            if statement.kind != COMMITMENTS or statement.run_id != sp.run_id:
                raise _Convicted(f"holder {i} sent a statement of another kind or run", holders=[i])
            try:
                body = statement.verify(site.identity)
            except EnvelopeError:
                raise _SiteFailed(
                    site, "round 1 not signed by the site (altered in transit?)"
                ) from None
            try:
                out.extend(decode_mask_commitments(sp, i, body))
            except ReshareError as exc:
                raise _Convicted(str(exc), holders=[i]) from None
        try:
            mask_table(sp, out)
        except ReshareError as exc:
            raise _Convicted(str(exc), holders=exc.holders) from None
        return out

    def _check_contributions(
        self,
        sp: ResharePlan,
        holders: Mapping[int, Site],
        statements: Mapping[int, Statement],
        commitments: list[MaskCommitment],
    ) -> Outcome:
        contributions = []
        for i, statement in statements.items():
            site = holders[i]
            if statement.kind != CONTRIBUTION or statement.run_id != sp.run_id:
                raise _Convicted(f"holder {i} sent a statement of another kind or run", holders=[i])
            try:
                body = statement.verify(site.identity)
            except EnvelopeError:
                raise _SiteFailed(site, "contribution not signed by the site") from None
            try:
                _, contribution = decode_dealt(sp, i, body)
            except ReshareError as exc:
                raise _Convicted(str(exc), holders=[i]) from None
            contributions.append(contribution)
        try:
            return verify_contributions(sp, contributions, commitments)
        except ReshareError as exc:
            raise _Convicted(str(exc), holders=exc.holders) from None

    def _check_acks(
        self, outcome: Outcome, members: Mapping[int, Site], acks: Sequence[Statement]
    ) -> list[Any]:
        shares = []
        epoch_ids = set()
        for j, statement in enumerate(acks, 1):
            site = members[j]
            if statement.kind != ACK or statement.run_id != outcome.plan.run_id:
                raise _Convicted(f"member {j} acknowledged another kind or run", members=[j])
            try:
                body = statement.verify(site.identity)
            except EnvelopeError:
                raise _SiteFailed(site, "acknowledgement not signed by the site") from None
            try:
                ack = decode_acknowledgement(outcome.params, j, body)
            except ReshareError as exc:
                raise _Convicted(str(exc), members=[j]) from None
            epoch_ids.add(ack.epoch_id)
            if ack.transcript != outcome.transcript or ack.run_id != outcome.plan.run_id:
                raise _Convicted(f"member {j} acknowledged another transcript", members=[j])
            shares.append(ack.share)
        if epoch_ids != {outcome.params.epoch_id_bytes}:
            # The members computed different epochs from the same public values: a holder
            # dealt inconsistently. Nothing singles it out; the attempt stops.
            raise _Convicted("the members acknowledged different epoch ids")
        return shares

    async def _judge(
        self,
        attempt: _Attempt,
        complainer: Site,
        message: rpb.Statement,
        commitments: list[MaskCommitment],
        outcome: Outcome | None,
    ) -> None:
        """Settle a complaint: it always ends the attempt, convicting whoever lied."""
        try:
            statement = codec.statement_from_wire(message)
            statement.verify(complainer.identity)
            if statement.kind != COMPLAINT or statement.run_id != attempt.run_id:
                raise ParameterError("not a complaint of this run")
            complaint = Complaint.from_body(statement.body)
        except (WireError, EnvelopeError, ParameterError) as exc:
            raise _SiteFailed(complainer, f"an unusable complaint: {exc}") from None
        attempt.record.setdefault("complaints", []).append(statement.to_dict())
        sealed = complaint.sealed
        sender = self.sites.get(sealed.sender)
        if sealed.recipient != complainer.name or sender is None:
            raise self._against(complainer, "a complaint about a value not sent to it")
        self.say(
            f"attempt {attempt.number}: {complainer.name} complains about "
            f"{sender.name}'s {complaint.about}: {complaint.reason}"
        )
        evidence = complaint.evidence
        if evidence is None:
            # It does not open: the sender reveals that message's ephemeral key.
            try:
                answer = await self._link(sender).call(
                    "RevealEphemeral", rpb.RevealRequest(complaint=message), self.timeout
                )
            except _SiteFailed as exc:
                raise self._against(
                    sender, f"would not answer a complaint about its sealed value: {exc.reason}"
                ) from None
            try:
                verdict, evidence = judge(
                    sealed, bytes(answer.ephemeral), sender.identity, complainer.identity
                )
            except (EnvelopeError, ParameterError) as exc:
                raise _Convicted(f"the complaint cannot be judged: {exc}") from None
            if verdict == "sender" or evidence is None:
                raise self._against(sender, "its sealed value does not open")
        try:
            payload = verify_evidence(evidence, sender.identity)
        except EnvelopeError:
            raise self._against(complainer, "its evidence is not signed by the sender") from None
        sp = attempt.sp
        if complaint.about == "mask" and sender.old_index and complainer.old_index:
            commitment = next(
                (
                    c
                    for c in commitments
                    if (c.sender, c.recipient) == (sender.old_index, complainer.old_index)
                ),
                None,
            )
            if commitment is None:
                raise self._against(complainer, "a complaint about a mask it was not sent")
            try:
                revealed = PrivateValue.from_bytes(
                    sp, "mask", sender.old_index, complainer.old_index, payload
                )
            except ReshareError:
                raise self._against(sender, "its mask has the wrong length") from None
            verdict_error = judge_mask_complaint(sp, commitment, revealed)
        elif (
            complaint.about == "sub-share"
            and outcome is not None
            and sender.old_index
            and complainer.new_index
        ):
            try:
                revealed = PrivateValue.from_bytes(
                    sp, "sub-share", sender.old_index, complainer.new_index, payload
                )
            except ReshareError:
                raise self._against(sender, "its sub-share has the wrong length") from None
            verdict_error = judge_sub_share_complaint(outcome, revealed)
        else:
            raise self._against(complainer, "a complaint that does not fit the run")
        raise _Convicted(
            verdict_error.reason, holders=verdict_error.holders, members=verdict_error.members
        )

    def _against(self, site: Site, reason: str) -> _Convicted:
        """A conviction of ``site`` in the role it sent the disputed value or complaint in:
        a mask or sub-share as a holder, a complaint about a sub-share as a member."""
        if site.old_index is not None and site.new_index is None:
            return _Convicted(f"{site.name}: {reason}", holders=[site.old_index])
        if site.new_index is not None and site.old_index is None:
            return _Convicted(f"{site.name}: {reason}", members=[site.new_index])
        return _Convicted(f"{site.name}: {reason}", holders=[site.old_index or 0])

    async def _abort(self, attempt: _Attempt) -> None:
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
