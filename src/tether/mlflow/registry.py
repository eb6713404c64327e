"""MLflow's model registry (``register_model``, ``MlflowClient`` version and alias calls)
on tether's registry.

What maps to what:

- a registered model is a tether model. MLflow allows names tether's registry (OCI
  repository names) does not, such as ``Fraud Model``: such a name is kept as the
  model's label, and the model is stored under a slug (``fraud-model``);
- a model version is a tether version: an immutable ModelKit. Its source must be files
  tether holds: a logged model (``models:/m-…``) or a run's artifacts (``runs:/RUN/PATH``,
  ``mlflow-artifacts:/…``); they are packed into a ModelKit tied to the run, so lineage
  runs from the run to the version;
- aliases are tether aliases, every move recorded in the model's history;
- deleting a version archives it (its number is never reused, its history stays), and
  deleting a model archives every version; stages are not supported (MLflow deprecated
  them for aliases).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tether.errors import ModelError, ModelNotFound, UsageError
from tether.mlflow.request import (
    MlflowError,
    invalid,
    millis,
    missing,
    page,
    paged,
    pairs,
    required,
    text,
)
from tether.registry import models as registry
from tether.registry.records import ModelVersion
from tether.repositories import models as repo
from tether.workspace import Workspace

_SLUG = re.compile(r"[^a-z0-9._/-]+")
_CONDITION = re.compile(
    r"""^\s*`?(?P<field>[a-z_.]+)`?\s*(?P<op>=|!=|like|ilike|in)\s*(?P<value>.+?)\s*$""",
    re.IGNORECASE,
)


# -- names ---------------------------------------------------------------------------------


def _name_of(ws: Workspace, label: str) -> str | None:
    """The tether model MLflow's ``label`` names, if any."""
    with ws.db.snapshot() as conn:
        found = repo.model_of_label(conn, label)
        if found is not None:
            return found
        if _is_name(label) and repo.exists(conn, label):
            return label
    return None


def _is_name(text: str) -> bool:
    try:
        registry.check_name(text)
    except UsageError:
        return False
    return True


def _model(ws: Workspace, body: Mapping[str, Any], field: str = "name") -> str:
    label = required(body, field)
    found = _name_of(ws, label)
    if found is None:
        raise missing(f"Registered Model with name={label[:120]} not found")
    return found


def _slug(ws: Workspace, label: str) -> str:
    """A free tether name for ``label``: itself when it is one."""
    if _is_name(label) and not _exists(ws, label):
        return label
    base = _SLUG.sub("-", label.lower()).strip("-./_")[:100] or "model"
    if not _is_name(base):
        base = "model"
    candidate, n = base, 1
    while _exists(ws, candidate):
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def _exists(ws: Workspace, name: str) -> bool:
    with ws.db.snapshot() as conn:
        return repo.exists(conn, name)


# -- JSON ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Model:
    name: str
    label: str
    description: str | None
    created: float
    user: str
    tags: Mapping[int, Mapping[str, str]]
    versions: list[ModelVersion]


def _load(ws: Workspace, name: str) -> _Model:
    with ws.db.snapshot() as conn:
        label, description = repo.labels(conn).get(name, (None, None))
        return _Model(
            name,
            label or name,
            description,
            *repo.created(conn, name),
            repo.tags(conn, name),
            repo.versions(conn, name),
        )


def version_json(model: _Model, v: ModelVersion) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": model.label,
        "version": str(v.version),
        "creation_timestamp": millis(v.created),
        "last_updated_timestamp": millis(v.created),
        "user_id": v.user,
        "current_stage": "None",
        "description": v.description or "",
        "source": v.source,
        "status": "READY",
        "tags": [{"key": k, "value": t} for k, t in sorted(model.tags.get(v.version, {}).items())],
        "aliases": sorted(v.aliases),
        "run_link": "",
    }
    if v.run_id:
        out["run_id"] = v.run_id
    if v.source.startswith("models:/"):
        out["model_id"] = v.source.removeprefix("models:/")
    return out


def model_json(model: _Model) -> dict[str, Any]:
    live = [v for v in model.versions if v.archived is None]
    aliases = [{"alias": a, "version": str(v.version)} for v in live for a in v.aliases]
    updated = max([model.created, *(v.created for v in model.versions)])
    return {
        "name": model.label,
        "creation_timestamp": millis(model.created),
        "last_updated_timestamp": millis(updated),
        "user_id": model.user,
        "description": model.description or "",
        "latest_versions": [version_json(model, live[-1])] if live else [],
        "tags": [{"key": k, "value": t} for k, t in sorted(model.tags.get(0, {}).items())],
        "aliases": sorted(aliases, key=lambda a: a["alias"]),
    }


def _version(ws: Workspace, body: Mapping[str, Any]) -> tuple[_Model, ModelVersion]:
    model = _load(ws, _model(ws, body))
    number = required(body, "version")
    for v in model.versions:
        if str(v.version) == number and v.archived is None:
            return model, v
    raise missing(f"Model Version (name={model.label[:120]}, version={number[:20]}) not found")


# -- registered models ---------------------------------------------------------------------


def create_registered_model(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    label = required(body, "name")
    description = text(body, "description", required=False)
    tags = pairs(body, "tags")
    with ws.db.atomic() as conn:  # the model, its label and tags, or none of them
        if _name_of(ws, label) is not None:
            raise MlflowError(
                "RESOURCE_ALREADY_EXISTS", f"Registered Model (name={label[:120]}) already exists."
            )
        name = _slug(ws, label)
        registry.create_model(ws, name)
        if label != name or description:
            repo.set_label(conn, name, label=label if label != name else None,
                           description=description)  # fmt: skip
        for key, value in tags.items():
            repo.set_tag(conn, name, 0, key, value)
    return {"registered_model": model_json(_load(ws, name))}


def model_named(ws: Workspace, label: str) -> str | None:
    """The tether model MLflow's name ``label`` stands for, if there is one."""
    return _name_of(ws, label)


def get_registered_model(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    return {"registered_model": model_json(_load(ws, _model(ws, body)))}


def update_registered_model(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    name = _model(ws, body)
    with ws.db.atomic() as conn:
        repo.set_label(conn, name, description=str(body.get("description") or ""))
    return {"registered_model": model_json(_load(ws, name))}


def delete_registered_model(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    """Archives every version (and removes the aliases, recorded): tether never forgets
    a version that may have served."""
    name = _model(ws, body)
    for v in _load(ws, name).versions:
        if v.archived is None:
            registry.archive(ws, name, str(v.version), force=True, reason="MLflow delete")
    return {}


def set_registered_model_tag(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    name = _model(ws, body)
    with ws.db.atomic() as conn:
        repo.set_tag(conn, name, 0, required(body, "key"), str(body.get("value") or ""))
    return {}


def delete_registered_model_tag(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    name = _model(ws, body)
    with ws.db.atomic() as conn:
        repo.delete_tag(conn, name, 0, required(body, "key"))
    return {}


def search_registered_models(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    conditions = _conditions(str(body.get("filter") or ""), {"name"})
    limit, offset = page(body, default=100)
    with ws.db.snapshot() as conn:
        names = [r.name for r in repo.summaries(conn)]
    models = [_load(ws, n) for n in names]
    found = [m for m in models if _matches({"name": m.label}, m.tags.get(0, {}), conditions)]
    found.sort(key=lambda m: m.label)
    shown, more = paged(found[offset : offset + limit + 1], limit, offset)
    return {"registered_models": [model_json(m) for m in shown], **more}


# -- versions ------------------------------------------------------------------------------


def create_model_version(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    from tether.mlflow.sources import model_files

    label = required(body, "name")
    name = _name_of(ws, label)
    if name is None:
        raise missing(f"Registered Model with name={label[:120]} not found")
    source = required(body, "source")
    files = model_files(ws, source, text(body, "run_id", required=False),
                        text(body, "model_id", required=False))  # fmt: skip
    from tether.modelkit.pack import pack_stored
    from tether.oci.reference import Reference
    from tether.repositories.runs import load_runs

    found = load_runs(ws.db, [files.run_id]) if files.run_id else []
    run = found[0] if found else None  # a run tether does not hold: the kit has no maker
    packed = pack_stored(ws, name, files.folder, list(files.files), run=run)
    entry = ws.index.resolve(Reference(None, digest=packed.digest))
    made = registry.register_kit(
        ws, name, entry,
        registry.KitSource(source, files.run_id, text(body, "description", required=False)),
    )  # fmt: skip
    tags = pairs(body, "tags")
    if tags:
        with ws.db.atomic() as conn:
            for key, value in tags.items():
                repo.set_tag(conn, name, made.version.version, key, value)
    model = _load(ws, name)
    (current,) = [v for v in model.versions if v.version == made.version.version]
    return {"model_version": version_json(model, current)}


def get_model_version(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    return {"model_version": version_json(*_version(ws, body))}


def update_model_version(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    model, v = _version(ws, body)
    with ws.db.atomic() as conn:
        repo.set_description(conn, model.name, v.version, str(body.get("description") or ""))
    return get_model_version(ws, body)


def delete_model_version(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    model, v = _version(ws, body)
    registry.archive(ws, model.name, str(v.version), force=True, reason="MLflow delete")
    return {}


def set_model_version_tag(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    model, v = _version(ws, body)
    with ws.db.atomic() as conn:
        repo.set_tag(conn, model.name, v.version, required(body, "key"),
                     str(body.get("value") or ""))  # fmt: skip
    return {}


def delete_model_version_tag(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    model, v = _version(ws, body)
    with ws.db.atomic() as conn:
        repo.delete_tag(conn, model.name, v.version, required(body, "key"))
    return {}


def download_uri(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    _, v = _version(ws, body)
    return {"artifact_uri": v.source}


def search_model_versions(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    fields = {"name", "run_id", "source", "version_number"}
    conditions = _conditions(str(body.get("filter") or ""), fields)
    limit, offset = page(body, default=10_000)
    with ws.db.snapshot() as conn:
        names = [r.name for r in repo.summaries(conn)]
    found = []
    for name in names:
        model = _load(ws, name)
        for v in model.versions:
            seen = {"name": model.label, "run_id": v.run_id or "", "source": v.source,
                    "version_number": str(v.version)}  # fmt: skip
            if v.archived is None and _matches(seen, model.tags.get(v.version, {}), conditions):
                found.append((model, v))
    found.sort(key=lambda mv: (mv[0].label, -mv[1].version))
    shown, more = paged(found[offset : offset + limit + 1], limit, offset)
    return {"model_versions": [version_json(m, v) for m, v in shown], **more}


def transition_stage(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    raise MlflowError(
        "NOT_IMPLEMENTED",
        "tether has no model stages (MLflow deprecated them): use aliases, "
        "e.g. MlflowClient().set_registered_model_alias(name, 'production', version)",
        status=501,
    )


# -- aliases -------------------------------------------------------------------------------


def set_alias(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    model, v = _version(ws, body)
    alias = required(body, "alias")
    try:
        registry.set_alias(ws, model.name, alias, str(v.version), reason="MLflow")
    except UsageError as e:
        raise invalid(e.message) from None
    return {}


def delete_alias(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    name = _model(ws, body)
    try:
        registry.remove_alias(ws, name, required(body, "alias"), reason="MLflow")
    except (ModelError, ModelNotFound) as e:
        raise missing(e.message) from None
    return {}


def get_by_alias(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    model = _load(ws, _model(ws, body))
    alias = required(body, "alias")
    for v in model.versions:
        if alias in v.aliases:
            return {"model_version": version_json(model, v)}
    raise missing(f"Registered model alias {alias[:80]} not found.")


# -- filters -------------------------------------------------------------------------------


def _conditions(text: str, fields: set[str]) -> list[tuple[str, str, str | list[str]]]:
    """MLflow's registry filters: ``FIELD = 'v'``, ``!=``, ``LIKE``/``ILIKE`` (% and _),
    ``IN ('a', 'b')`` and ``tags.KEY = 'v'``, joined by AND."""
    out: list[tuple[str, str, str | list[str]]] = []
    for part in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE) if text.strip() else []:
        m = _CONDITION.match(part)
        field = m.group("field") if m else ""
        known = field in fields or field.startswith("tags.")
        if m is None or not known:
            raise invalid(
                f"tether reads filters on {', '.join(sorted(fields))} and tags.KEY;"
                f" cannot read {part[:80]!r}"
            )
        op = m.group("op").lower()
        raw = m.group("value")
        if op == "in":
            values = re.findall(r"""['"]([^'"]*)['"]""", raw)
            if not raw.startswith("(") or not values:
                raise invalid(f"IN needs a list of quoted values: {part[:80]!r}")
            out.append((field, op, values))
            continue
        if len(raw) < 2 or raw[0] not in "'\"" or raw[-1] != raw[0]:
            raise invalid(f"values are quoted strings: {part[:80]!r}")
        out.append((field, op, raw[1:-1]))
    return out


def _matches(
    seen: Mapping[str, str],
    tags: Mapping[str, str],
    conditions: list[tuple[str, str, str | list[str]]],
) -> bool:
    for field, op, value in conditions:
        actual = tags.get(field[5:].strip("`")) if field.startswith("tags.") else seen.get(field)
        if op == "in":
            ok = actual in value
        elif isinstance(value, list):
            ok = False
        elif op in ("like", "ilike"):
            flags = re.IGNORECASE if op == "ilike" else 0
            pattern = "".join(
                ".*" if c == "%" else "." if c == "_" else re.escape(c) for c in value
            )
            ok = actual is not None and re.fullmatch(pattern, actual, flags | re.DOTALL) is not None
        else:
            ok = (actual == value) == (op == "=")
        if not ok:
            return False
    return True
