"""``ittc site ...`` and ``ittc reshare ...``: moving the key to a new epoch, by hand or
from a script (docs/runbooks.md).

At each site, once::

    ittc site keygen --config etc/node.toml --name alpha     # prints the site's identity

At the operator's desk, once the identities are in::

    ittc reshare enroll --cluster combiner/ --site 1=alpha.json --site 2=bravo.json ...

Each reshare::

    ittc reshare plan --cluster combiner/ --out plan.json [--threshold K] [--drop I]
        [--add SITE.json@HOST:PORT] [--replace I=SITE.json@HOST:PORT]
    ittc reshare approve --plan plan.json --config etc/node.toml --out alpha.approval
        (at k sites: each checks the plan, then signs it with its own site key)
    ittc reshare run --cluster combiner/ --plan plan.json --approvals *.approval
    ittc reshare run ... --resume        (after a crash: forward with a certificate,
                                          back without one)
    ittc reshare status --cluster combiner/ [--plan plan.json]

A scheduled refresh (every site's ``[reshare] auto_approve_refresh_days`` allows it; a
systemd timer runs it monthly: nodes/systemd/ittc-reshare-refresh.timer)::

    ittc reshare refresh --cluster combiner/

Exit codes: 0 done; 2 refused or failed (one line says why; nothing committed unless it
says so); 3 for ``run``: committed, but some sites did not take the commit yet (run again
with ``--resume``, or any combiner with the new cluster file hands it to them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import sys
import time
from typing import Any

from ittc.cli import argtypes
from ittc.cli.command import EXIT_ERROR, EXIT_OK, Command, say
from ittc.config import ClusterFile, NodeConfig
from ittc.errors import ConfigError, IttcError, ParameterError
from ittc.lifecycle import Approval, Member, Plan, SiteIdentity, approve
from ittc.scheme.params import PublicParams
from ittc.storage.files import write_file_atomically

__all__ = ["RESHARE", "SITE"]

#: ``run``: committed, but not every site took the commit yet.
EXIT_PARTIAL = 3


def _read_json(path: pathlib.Path, what: str) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a folder, not {_a(what)} file") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not {_a(what)} file (not JSON: {exc})") from None


def _a(what: str) -> str:
    return f"{'an' if what[0] in 'aeiou' else 'a'} {what}"


def _load_plan(path: pathlib.Path) -> Plan:
    """A plan file; every fault named with the file, as one line."""
    try:
        return Plan.from_json(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such plan file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a folder, not a plan file") from None
    except ParameterError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _load_approval(path: pathlib.Path) -> Approval:
    try:
        return Approval.from_dict(_read_json(path, "approval"))
    except ParameterError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _write_public(path: pathlib.Path, text: str) -> None:
    if path.is_dir():
        raise ConfigError(f"{path}: a folder; name the file to write")
    if not path.absolute().parent.is_dir():
        raise ConfigError(f"{path}: no such folder {path.absolute().parent}")
    write_file_atomically(path, text.encode(), mode=0o644, overwrite=True)


def _identity(path: pathlib.Path) -> SiteIdentity:
    try:
        return SiteIdentity.from_dict(_read_json(path, "site identity"))
    except ParameterError as exc:
        raise ConfigError(f"{path}: {exc}") from None


# -- ittc site ---------------------------------------------------------------------------


def _setup_site(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="site_command", metavar="ACTION", required=True)
    k = sub.add_parser(
        "keygen",
        help="make this site's reshare key, here, under the node's passphrase",
        description="Makes the site key (Ed25519 to sign, X25519 to receive sealed values) "
        "beside the node's config, encrypted under the node's own passphrase, and adds the "
        "[reshare] table to node.toml. Prints the site's public identity (JSON) on stdout "
        "and its fingerprint on stderr: hand the identity to the operator, and read the "
        "fingerprint to them by voice.",
    )
    k.add_argument("--config", required=True, type=pathlib.Path, help="the node's node.toml")
    k.add_argument("--name", required=True, help="the site's name (a-z, 0-9, '.', '-')")
    k.add_argument("--out", type=pathlib.Path, help="also write the identity to this file")
    s = sub.add_parser("show", help="this site's public identity (no passphrase needed)")
    s.add_argument("--config", required=True, type=pathlib.Path, help="the node's node.toml")
    n = sub.add_parser(
        "new",
        help="the folder of a site that will join at a reshare (needs the CA key)",
        description="Writes site-<INDEX>/ in the ceremony folder: node.toml, a TLS identity "
        "issued by the cluster CA (ca/ca.key must be back for this), the current epoch's "
        "parameters and cluster file, a random passphrase; no share and no site key. Ship "
        "the folder to the new site, run `ittc site keygen` there, and name the identity in "
        "a plan (--add or --replace).",
    )
    n.add_argument("--ceremony", required=True, type=pathlib.Path, help="the ceremony folder")
    n.add_argument("--index", required=True, type=argtypes.integer(1, 999), help="folder number")
    n.add_argument(
        "--address", required=True, type=argtypes.address, help="where combiners dial it"
    )
    n.add_argument("--listen", type=argtypes.address, help="where it binds (default: --address)")
    n.add_argument("--tls-name", help="the name its certificate carries (ittc-node-INDEX)")


def _run_site(args: argparse.Namespace) -> int:
    from ittc import storage
    from ittc.deploy.sites import SITE_KEY_FILE, site_keygen

    if args.site_command == "new":
        from ittc.deploy.layout import CeremonyFolder
        from ittc.deploy.sites import new_site

        folder = CeremonyFolder.of(args.ceremony)
        made = new_site(
            folder,
            ClusterFile.load(folder.cluster_file),
            args.index,
            args.address,
            listen=args.listen,
            tls_name=args.tls_name,
        )
        say(
            f"{folder.site(args.index)}: a site without a share; next, at the site: "
            f"ittc site keygen --config {made.relative_to(folder.root)} --name NAME"
        )
        return EXIT_OK
    if args.site_command == "keygen":
        identity = site_keygen(args.config, args.name)
    else:
        config = NodeConfig.load(args.config)
        path = config.site_key or config.path.parent / SITE_KEY_FILE
        identity = storage.read_site_identity(path)
    text = json.dumps(identity.to_dict(), indent=1, sort_keys=True) + "\n"
    sys.stdout.write(text)
    if getattr(args, "out", None) is not None:
        _write_public(args.out, text)
    say(f"site {identity.name}: fingerprint {identity.fingerprint}")
    return EXIT_OK


SITE = Command(
    "site",
    "a site's reshare key: keygen (at the site), show; new (a joining site's folder)",
    _setup_site,
    _run_site,
)


# -- ittc reshare ------------------------------------------------------------------------


def _setup_reshare(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="reshare_command", metavar="ACTION", required=True)

    e = sub.add_parser("enroll", help="write the sites' identities into the cluster file")
    e.add_argument("--cluster", required=True, type=pathlib.Path, help="cluster folder or file")
    e.add_argument(
        "--site",
        action="append",
        required=True,
        metavar="INDEX=IDENTITY.json",
        help="node INDEX is held by the site of this identity file (repeat for each site)",
    )

    pl = sub.add_parser(
        "plan",
        help="write a plan: the new membership and threshold (to be approved by k sites)",
        description="The new membership starts as the current one; --replace, --drop and "
        "--add change it, in that order; indices are then renumbered 1..n'. Without any, "
        "the plan is a refresh (every share replaced, nothing else changes).",
    )
    pl.add_argument("--cluster", required=True, type=pathlib.Path, help="cluster folder or file")
    pl.add_argument("--out", required=True, type=pathlib.Path, help="the plan file to write")
    pl.add_argument(
        "--threshold",
        type=argtypes.integer(2, 64),
        help="k' of the new epoch (default: the current k)",
    )
    pl.add_argument(
        "--replace",
        action="append",
        default=[],
        metavar="INDEX=IDENTITY.json@HOST:PORT[/TLS_NAME]",
        help="a new site takes index INDEX (a lost or broken-into site)",
    )
    pl.add_argument(
        "--drop", action="append", default=[], type=int, metavar="INDEX", help="remove a site"
    )
    pl.add_argument(
        "--add",
        action="append",
        default=[],
        metavar="IDENTITY.json@HOST:PORT[/TLS_NAME]",
        help="a new site, after the others",
    )
    pl.add_argument(
        "--valid-for",
        type=argtypes.seconds,
        default=24 * 3600.0,
        metavar="SECONDS",
        help="how long approvals may start a run (86400)",
    )

    ap = sub.add_parser("approve", help="approve a plan with this site's key (at the site)")
    ap.add_argument("--plan", required=True, type=pathlib.Path, help="the plan file to approve")
    ap.add_argument("--config", required=True, type=pathlib.Path, help="the node's node.toml")
    ap.add_argument("--out", type=pathlib.Path, help="the approval file (default: stdout)")
    ap.add_argument("--yes", action="store_true", help="do not ask (a script that checked)")

    r = sub.add_parser("run", help="carry an approved plan to a new epoch (the coordinator)")
    r.add_argument("--cluster", required=True, type=pathlib.Path, help="cluster folder or file")
    r.add_argument("--plan", required=True, type=pathlib.Path, help="the approved plan file")
    r.add_argument(
        "--approvals", nargs="+", default=[], type=pathlib.Path, metavar="FILE", help="approvals"
    )
    r.add_argument(
        "--resume",
        action="store_true",
        help="after a crash: commit everywhere if a certificate was written, else abort",
    )
    r.add_argument(
        "--timeout", type=argtypes.seconds, default=120.0, help="seconds per step per site (120)"
    )

    rf = sub.add_parser(
        "refresh",
        help="a scheduled refresh: plan, approvals asked of the sites, run (unattended)",
        description="Makes a plan that only refreshes the current epoch (the same sites, the "
        "same k), asks every site to approve it unattended (a site does so only if its "
        "[reshare] auto_approve_refresh_days allows, at most that often), and runs it with "
        "the approvals it got. Interrupted: `ittc reshare run --resume --plan` with the plan "
        "in the run folder it prints.",
    )
    rf.add_argument("--cluster", required=True, type=pathlib.Path, help="cluster folder or file")
    rf.add_argument(
        "--timeout", type=argtypes.seconds, default=120.0, help="seconds per step per site (120)"
    )

    st = sub.add_parser("status", help="each site's epoch and run; a plan's run folder")
    st.add_argument("--cluster", required=True, type=pathlib.Path, help="cluster folder or file")
    st.add_argument("--plan", type=pathlib.Path, help="also show this plan's run folder")


def _member_spec(text: str) -> Member:
    """``IDENTITY.json@HOST:PORT[/TLS_NAME]`` (index set later)."""
    path, sep, where = text.rpartition("@")
    if not sep or not path:
        raise ConfigError(f"{text!r}: expected IDENTITY.json@HOST:PORT[/TLS_NAME]")
    address, _, tls_name = where.partition("/")
    identity = _identity(pathlib.Path(path))
    try:
        address = argtypes.address(address)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"{text!r}: {exc}") from None
    return Member(1, identity, address, tls_name)


def _plan(args: argparse.Namespace) -> int:
    cluster = ClusterFile.load(args.cluster)
    members: dict[int, Member] = {}
    for node in cluster.nodes:
        if node.site is None:
            raise ConfigError(
                f"{cluster.path}: node {node.index} has no site identity (ittc reshare enroll)"
            )
        members[node.index] = Member(node.index, node.site, node.address, node.tls_name)
    for spec in args.replace:
        index_text, sep, rest = spec.partition("=")
        if not sep or not index_text.isdigit() or int(index_text) not in members:
            raise ConfigError(f"--replace {spec!r}: expected INDEX=IDENTITY.json@HOST:PORT")
        member = _member_spec(rest)
        members[int(index_text)] = Member(
            int(index_text), member.site, member.address, member.tls_name
        )
    for index in args.drop:
        if members.pop(index, None) is None:
            raise ConfigError(f"--drop {index}: no such node")
    ordered = [members[i] for i in sorted(members)] + [_member_spec(s) for s in args.add]
    # A new site's TLS name defaults to its index's (what ittc's site folders issue).
    renumbered = [
        Member(j, m.site, m.address, m.tls_name or f"ittc-node-{j}")
        for j, m in enumerate(ordered, 1)
    ]
    # The coordinator knows a site by its name: a site's new key comes with a new name.
    old_sites = {n.site.name: n.site for n in cluster.nodes if n.site is not None}
    for m in renumbered:
        if old_sites.get(m.site.name, m.site) != m.site:
            raise ConfigError(
                f"site {m.site.name} has other keys in {cluster.path}: a site's new key needs "
                f"a new name (ittc site keygen --name {m.site.name}-2)"
            )
    k = args.threshold or cluster.params.k
    plan = Plan.new(cluster.params, renumbered, k, not_after=int(time.time() + args.valid_for))
    _write_public(args.out, plan.to_json())
    print(_describe(plan, (cluster.params, cluster.sites())))
    say(f"plan {plan.digest.hex()} written to {args.out}: it needs {cluster.params.k} approvals")
    return EXIT_OK


def _describe(plan: Plan, old: tuple[PublicParams, dict[int, SiteIdentity]] | None = None) -> str:
    """The plan as a person reads it before approving: against the epoch it starts from
    (``old``: its parameters and sites), which sites stay, leave or come, and whose keys
    change under a name that stays."""
    expires = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(plan.not_after))
    lines = [
        f"plan {plan.digest.hex()}",
        f"  key {plan.key_id}",
        f"  from epoch {plan.old_epoch} ({plan.old_epoch_id[:16]})"
        + (f", {old[0].k} of {old[0].n}" if old is not None else ""),
        f"  to epoch {plan.old_epoch + 1}: any {plan.k} of these {plan.n} sites sign",
    ]
    sites = old[1] if old is not None else {}
    by_name = {site.name: (index, site) for index, site in sites.items()}
    for m in plan.members:
        index, site = by_name.get(m.site.name, (None, None))
        if site is None:
            was = "(new site)"
        elif site == m.site:
            was = f"(was {index})"
        else:
            was = f"(NEW KEYS for site {index} of that name)"
        lines.append(
            f"    {m.index:2d}  {m.site.name:12s} {was:11s} {m.address}  tls {m.tls_name}  "
            f"fingerprint {m.site.fingerprint}"
        )
    members = {m.site.name for m in plan.members}
    for index, site in sorted(sites.items()):
        if site.name not in members:
            lines.append(f"    --  {site.name:12s} (was {index}) leaves; its share is destroyed")
    lines.append(f"  approvals accepted until {expires}")
    return "\n".join(lines)


def _site_epoch(config: NodeConfig) -> tuple[PublicParams, dict[int, SiteIdentity]]:
    """The epoch this site's node is in (its state folder, or the configured cluster file
    before its first commit): its parameters and sites."""
    from ittc.storage.epochs import EpochStore

    assert config.state_dir is not None and config.sites is not None
    store = EpochStore(config.state_dir)
    try:
        current = store.current()
        if current is not None:
            certificate = store.certificate(current.epoch)
            return certificate.params, certificate.sites()
        cluster = ClusterFile.load(config.sites)
        return cluster.params, cluster.sites()
    except OSError as exc:
        raise ConfigError(f"{config.path}: this site's epoch: {exc}") from None
    except IttcError as exc:
        raise ConfigError(f"{config.path}: this site's epoch: {exc}") from None


def _approve(args: argparse.Namespace) -> int:
    from ittc import storage
    from ittc.deploy.sites import _passphrase

    plan = _load_plan(args.plan)
    config = NodeConfig.load(args.config)
    if config.site_key is None:
        raise ConfigError(f"{config.path}: no [reshare] site_key (ittc site keygen first)")
    params, sites = _site_epoch(config)
    print(_describe(plan, (params, sites)), file=sys.stderr)
    if (plan.key_id, plan.old_epoch_id) != (params.key_id, params.epoch_id):
        say(
            f"WARNING: this site is at epoch {params.epoch} ({params.epoch_id[:16]}) of key "
            f"{params.short_id}; the plan starts from another (the sites above are this "
            "site's epoch's)"
        )
    if time.time() > plan.not_after:
        raise ParameterError("the plan has expired: ask for a new one")
    if not args.yes:
        if not sys.stdin.isatty():
            raise ParameterError("not approved: give --yes, or run at a terminal to confirm")
        answer = input("Approve this plan with this site's key? Type 'approve': ")
        if answer.strip() != "approve":
            say("not approved")
            return EXIT_ERROR
    key = storage.read_site_key(config.site_key, _passphrase(config))
    approval = approve(key, plan)
    text = json.dumps(approval.to_dict(), indent=1, sort_keys=True) + "\n"
    if args.out is not None:
        _write_public(args.out, text)
        say(f"site {key.name} approved plan {plan.digest.hex()[:16]}: {args.out}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from ittc.deploy.reshare import Coordinator

    cluster = ClusterFile.load(args.cluster)
    plan = _load_plan(args.plan)
    approvals = [_load_approval(p) for p in args.approvals]
    if cluster.params.epoch != plan.old_epoch and args.resume:
        # The cluster file already names the new epoch: resume from the run folder's copy
        # of the epoch the plan started from.
        from ittc.deploy.reshare import cluster_before

        cluster = cluster_before(cluster, plan)
    coordinator = Coordinator(cluster, plan, approvals, timeout=args.timeout, say=say)
    if args.resume:
        certificate = asyncio.run(coordinator.resume())
        if certificate is None:
            return EXIT_OK
    else:
        certificate = asyncio.run(coordinator.run())
    outcome = coordinator.folder.outcome() or {}
    return EXIT_PARTIAL if outcome.get("not_delivered") else EXIT_OK


def _refresh(args: argparse.Namespace) -> int:
    from ittc.deploy.reshare import (
        Coordinator,
        ReshareFailed,
        gather_refresh_approvals,
        refresh_plan,
    )

    cluster = ClusterFile.load(args.cluster)
    plan = refresh_plan(cluster)
    say(f"refresh of epoch {cluster.epoch}: plan {plan.digest.hex()[:16]}, asking the sites")
    approvals, refused = asyncio.run(gather_refresh_approvals(cluster, plan))
    for site, reason in sorted(refused.items()):
        say(f"  {site} did not approve: {reason}")
    if len(approvals) < cluster.params.k:
        raise ReshareFailed(
            f"{len(approvals)} sites approved the refresh, {cluster.params.k} are needed"
        )
    say("  approved by " + ", ".join(sorted(a.site for a in approvals)))
    coordinator = Coordinator(cluster, plan, approvals, timeout=args.timeout, say=say)
    say(
        f"run folder {coordinator.folder.root} (resume with: ittc reshare run --resume "
        f"--cluster {args.cluster} --plan {coordinator.folder.root / 'plan.json'})"
    )
    asyncio.run(coordinator.run())
    outcome = coordinator.folder.outcome() or {}
    return EXIT_PARTIAL if outcome.get("not_delivered") else EXIT_OK


def _status(args: argparse.Namespace) -> int:
    from ittc.deploy.reshare import site_statuses

    cluster = ClusterFile.load(args.cluster)
    print(
        f"cluster file: key {cluster.params.short_id}, epoch {cluster.epoch} "
        f"({cluster.params.epoch_id[:16]}), {cluster.params.k} of {cluster.params.n}"
    )
    for line in asyncio.run(site_statuses(cluster)):
        print(f"  {line}")
    if args.plan is not None:
        from ittc.deploy.reshare import RunFolder

        plan = _load_plan(args.plan)
        folder = RunFolder.of(cluster, plan)
        print(f"run folder {folder.root}:")
        for record in folder.attempts():
            outcome = record.get("outcome", {})
            print(
                f"  attempt {record['attempt']}: holders {record['holders']}: "
                f"{outcome or 'under way'}"
            )
        print(f"  certificate: {'written' if folder.certificate_path.exists() else 'none'}")
        outcome = folder.outcome()
        print(f"  outcome: {json.dumps(outcome) if outcome else 'none yet'}")
    return EXIT_OK


def _run_reshare(args: argparse.Namespace) -> int:
    command = args.reshare_command
    if command == "enroll":
        from ittc.deploy.sites import enroll

        identities = {}
        for spec in args.site:
            index, sep, path = spec.partition("=")
            if not sep or not index.isdigit():
                raise ConfigError(f"--site {spec!r}: expected INDEX=IDENTITY.json")
            identities[int(index)] = _identity(pathlib.Path(path))
        enroll(args.cluster, identities)
        cluster = ClusterFile.load(args.cluster)
        for node in cluster.nodes:
            who = f"{node.site.name}  {node.site.fingerprint}" if node.site else "(no site yet)"
            print(f"  node {node.index}: {who}")
        say(f"{cluster.path}: copy it to every site as etc/cluster.toml, and to every combiner")
        return EXIT_OK
    handlers = {
        "plan": _plan,
        "approve": _approve,
        "run": _run,
        "refresh": _refresh,
        "status": _status,
    }
    return handlers[command](args)


RESHARE = Command(
    "reshare",
    "move the key to a new epoch: enroll, plan, approve, run [--resume], status",
    _setup_reshare,
    _run_reshare,
)
