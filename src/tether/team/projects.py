"""Projects on the server and who may do what in them.

Roles rank read < write < admin. A user without a grant does not see the project at
all: asking for it answers "not found", exactly as for a project that does not exist.
Server admins (``user add --admin``) hold admin on every project.
"""

from __future__ import annotations

import time

from tether.errors import Forbidden, ProjectNotFound, UsageError
from tether.repositories import team as repo
from tether.team.accounts import user
from tether.team.audit import Actor, record
from tether.team.deployment import Deployment, check_project_name
from tether.team.records import RANK, ROLES, Grant, Role, User


def add_project(team: Deployment, name: str, *, actor: Actor) -> None:
    check_project_name(name)
    # The folder and schema first: a project row never names one that is not there.
    team.create(name)
    if not repo.add_project(team.team, name, at=time.time()):
        raise UsageError(f"project {name} exists", hint="tether server project list")
    record(team, actor, "project.add", name, {})


def projects(team: Deployment) -> list[str]:
    return repo.projects(team.team)


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise UsageError(f"{role[:20]!r} is not a role", hint="read, write or admin")
    return role


def grant(team: Deployment, name: str, project: str, role: str, *, actor: Actor) -> Grant:
    who = user(team, name)
    if project not in repo.projects(team.team):
        raise UsageError(f"no project {project[:60]!r}", hint="tether server project add NAME")
    checked = check_role(role)
    repo.set_grant(team.team, who, project, checked)
    record(team, actor, "grant.set", f"{project}/{name}", {"role": checked})
    return Grant(name, project, checked)


def revoke(team: Deployment, name: str, project: str, *, actor: Actor) -> None:
    if not repo.remove_grant(team.team, user(team, name), project):
        raise UsageError(f"{name} has no grant on {project}", hint="tether server grant list")
    record(team, actor, "grant.remove", f"{project}/{name}", {})


def grants(team: Deployment) -> list[Grant]:
    return repo.grants(team.team)


def authorize(team: Deployment, who: User, project: str, need: Role) -> Role:
    """The user's role on ``project``; not found when there is none (or no such
    project), forbidden when it ranks below ``need``."""
    role: Role | None = "admin" if who.admin else repo.role_of(team.team, who, project)
    if who.admin and project not in repo.projects(team.team):
        role = None
    if role is None:
        raise ProjectNotFound(
            f"no project {project[:60]!r}", hint="see the projects you may use at /"
        )
    if RANK[role] < RANK[need]:
        raise Forbidden(
            f"{who.name} may only {role} in {project}",
            hint=f"ask a project admin for {need}: tether server grant {who.name} {project} {need}",
        )
    return role


def protect(team: Deployment, project: str, alias: str, role: str, *, actor: Actor) -> Role | None:
    """Require ``role`` (write or admin; "none" lifts the rule) to move ``alias`` in
    ``project``, on the server's pages and through sync."""
    if project not in repo.projects(team.team):
        raise UsageError(f"no project {project[:60]!r}", hint="tether server project list")
    from tether.registry.models import check_name

    check_name(alias)
    if role not in ("write", "admin", "none"):
        raise UsageError(f"{role[:20]!r} is not a role for an alias", hint="write, admin or none")
    rule: Role | None = None if role == "none" else check_role(role)
    repo.set_alias_rule(team.team, project, alias, rule)
    record(team, actor, "alias.protect", f"{project}/{alias}", {"role": role})
    return rule


def alias_rules(team: Deployment, project: str) -> dict[str, Role]:
    return repo.alias_rules(team.team, project)


def may_move(team: Deployment, who: User, project: str, alias: str) -> None:
    """Refuse (Forbidden) a move of ``alias`` by ``who`` when its rule asks a higher
    role than theirs."""
    need = repo.alias_rules(team.team, project).get(alias)
    if need is None:
        return
    role = authorize(team, who, project, "read")
    if RANK[role] < RANK[need]:
        raise Forbidden(
            f"moving {alias} in {project} needs the {need} role; {who.name} has {role}",
            hint=f"ask a project admin to move it, or for the role: tether server grant"
            f" {who.name} {project} {need}",
        )


def visible(team: Deployment, who: User) -> list[tuple[str, Role]]:
    """The projects ``who`` may see, with the role on each."""
    if who.admin:
        return [(p, "admin") for p in repo.projects(team.team)]
    return [(g.project, g.role) for g in repo.grants(team.team) if g.user == who.name]
